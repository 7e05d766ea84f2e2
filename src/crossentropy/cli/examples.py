"""``crossentropy examples``: the classic 8-row worked-example table, computed by the library.

The rows are kept in ``worked_examples.json`` (beside this module) and loaded
into :data:`WORKED_EXAMPLES`, so that the docs and the tests use the same data.
Each row's ``loss`` is the correct value to 4 decimals
(``-sum_c y_c log yhat_c``, natural log); ``copied`` is the value that the widely
copied version of this table prints, which is wrong in rows 5, 7 and 8.

The command itself never prints ``loss`` from this table: it prints what
``crossentropy.cross_entropy_from_probs`` returns for each row.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from crossentropy.cli._args import add_command


@dataclass(frozen=True)
class WorkedExample:
    """One row of the worked-example table, with its correct and copied loss.

    ``why`` is a template: ``{p_true}`` (the probability on the true class of a
    hard target), ``{loss}``, ``{entropy}``, ``{kl}`` and ``{uniform}`` (the loss
    of a uniform guess) are filled in with the library's numbers when the table
    is printed.
    """

    row: int
    target: tuple[float, ...]
    probs: tuple[float, ...]
    loss: float  # the correct value, 4 decimals
    copied: float  # what the widely copied table prints
    kind: str  # confident-correct, uncertain, confident-wrong, soft target
    why: str


def _load_examples() -> tuple[WorkedExample, ...]:
    """The table from ``worked_examples.json``, which sits beside this module."""
    text = resources.files("crossentropy.cli").joinpath("worked_examples.json").read_text("utf-8")
    return tuple(
        WorkedExample(**{**r, "target": tuple(r["target"]), "probs": tuple(r["probs"])})
        for r in json.loads(text)
    )


#: The eight rows, in order (the data and its field notes: ``worked_examples.json``).
WORKED_EXAMPLES: tuple[WorkedExample, ...] = _load_examples()

#: Rows where the widely copied table is wrong, with its value and the correct one.
COPIED_TABLE_ERRORS = tuple(
    (ex.row, ex.copied, ex.loss) for ex in WORKED_EXAMPLES if abs(ex.copied - ex.loss) > 0.005
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this subcommand's parser to ``subparsers``."""
    add_command(
        subparsers, "examples", run,
        help="the 8-row worked-example table, computed by the library",
        description=(
            "Reproduce the classic worked-example table of cross-entropy values "
            "(hard and soft targets) with crossentropy.cross_entropy_from_probs, "
            "say why each value is large or small, and mark where the widely "
            "copied table is wrong."
        ),
    )


def compute_rows() -> list[dict[str, Any]]:
    """Each worked example with the library's loss, H(y) and KL(y || yhat)."""
    import numpy as np

    import crossentropy as ce

    y = np.asarray([ex.target for ex in WORKED_EXAMPLES], dtype=np.float64)
    p = np.asarray([ex.probs for ex in WORKED_EXAMPLES], dtype=np.float64)
    loss = ce.cross_entropy_from_probs(p, y, reduction="none")
    h = ce.entropy(y)
    kl = ce.kl_divergence(y, p)
    uniform = ce.cross_entropy_from_probs(np.full_like(p, 1.0 / p.shape[-1]), y, reduction="none")
    rows = []
    for i, ex in enumerate(WORKED_EXAMPLES):
        hard = max(ex.target) == 1
        rows.append(
            {
                "example": ex,
                "loss": float(loss[i]),
                "entropy": float(h[i]) + 0.0,  # + 0.0 turns -0.0 into 0.0
                "kl": float(kl[i]),
                "uniform": float(uniform[i]),
                "p_true": ex.probs[ex.target.index(1)] if hard else None,
            }
        )
    return rows


def explain_row(r: dict[str, Any]) -> str:
    """The row's ``why`` text with the library's numbers filled in."""
    why: str = r["example"].why
    return why.format(**{k: v for k, v in r.items() if k != "example"})


def _vec(xs: Iterable[float]) -> str:
    return "[" + ", ".join(f"{x:g}" for x in xs) + "]"


def render(rows: list[dict[str, Any]]) -> str:
    """The table and the notes on the copied table's errors, as text."""
    from tabulate import tabulate

    table = tabulate(
        [
            [r["example"].row, _vec(r["example"].target), _vec(r["example"].probs),
             r["loss"], r["entropy"], r["kl"], r["example"].kind]
            for r in rows
        ],
        headers=["#", "target y", "prediction yhat", "CE", "H(y)", "KL", "kind"],
        floatfmt=".4f",
    )
    lines = [
        "Cross-entropy CE = -sum_c y_c log yhat_c (natural log) = H(y) + KL(y || yhat),",
        "computed by crossentropy.cross_entropy_from_probs, entropy and kl_divergence.",
        "",
        table,
    ]
    lines += ["", "Why each value is large or small:"]
    for r in rows:
        lines += textwrap.wrap(
            explain_row(r), width=88, initial_indent=f"{r['example'].row:>2}. ",
            subsequent_indent="    ",
        )
    lines += [
        "",
        "Note: the widely copied version of this table is wrong in rows "
        + ", ".join(str(row) for row, _, _ in COPIED_TABLE_ERRORS)
        + ":",
    ]
    by_row = {r["example"].row: r for r in rows}
    for row, copied, _ in COPIED_TABLE_ERRORS:
        lines.append(
            f"  row {row}: it prints {copied:.3f}, the library gives {by_row[row]['loss']:.4f}"
        )
    below_entropy = [
        f"row {row} prints {copied:.3f} < H(y) = {by_row[row]['entropy']:.4f}"
        for row, copied, _ in COPIED_TABLE_ERRORS
        if copied < by_row[row]["entropy"]
    ]
    notes = []
    if below_entropy:
        notes.append(
            "No prediction can score below the target's entropy (CE = H + KL, KL >= 0), yet "
            + " and ".join(below_entropy)
            + "."
        )
    notes.append(
        "Row 5's 1.099 is log 3, the loss of an exactly uniform guess; "
        "the prediction gives the true class 0.33, not 1/3."
    )
    for note in notes:
        lines += textwrap.wrap(note, width=88, initial_indent="  ", subsequent_indent="  ")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the worked-example table; the exit status."""
    print(render(compute_rows()))
    return 0
