"""``crossentropy examples``: the classic 8-row worked-example table, computed by the library.

The rows are kept in :data:`WORKED_EXAMPLES` so that the docs and the tests use
the same data. Each row's ``loss`` is the correct value to 4 decimals
(``-sum_c y_c log yhat_c``, natural log); ``copied`` is the value that the widely
copied version of this table prints, which is wrong in rows 5, 7 and 8.

The command itself never prints ``loss`` from this table: it prints what
``crossentropy.cross_entropy_from_probs`` returns for each row.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from crossentropy.cli._args import add_command


@dataclass(frozen=True)
class WorkedExample:
    """One row of the worked-example table, with its correct and copied loss."""

    row: int
    target: tuple[float, ...]
    probs: tuple[float, ...]
    loss: float  # the correct value, 4 decimals
    copied: float  # what the widely copied table prints
    kind: str  # confident-correct, uncertain, confident-wrong, soft target
    why: str


# ``why`` is a template: {p_true} (probability on the true class of a hard target),
# {loss}, {entropy}, {kl} and {uniform} (the loss of a uniform guess) are filled in
# with the library's numbers when the table is printed.
WORKED_EXAMPLES: tuple[WorkedExample, ...] = (
    WorkedExample(
        1, (1, 0, 0), (0.8, 0.1, 0.1), 0.2231, 0.223, "confident-correct",
        "{p_true:.0%} on the true class: the loss is just -log {p_true:g} = {loss:.4f}, small.",
    ),
    WorkedExample(
        2, (0, 1, 0), (0.3, 0.4, 0.3), 0.9163, 0.916, "uncertain",
        "right class on top, but only {p_true:.0%} on it: -log {p_true:g} = {loss:.4f}, "
        "moderate.",
    ),
    WorkedExample(
        3, (0, 0, 1), (0.9, 0.05, 0.05), 2.9957, 2.996, "confident-wrong",
        "90% on a wrong class leaves {p_true:.0%} for the true one: -log {p_true:g} = "
        "{loss:.4f}, large. The loss has no upper bound as that probability goes to 0.",
    ),
    WorkedExample(
        4, (1, 0, 0), (0.99, 0.005, 0.005), 0.0101, 0.010, "confident-correct",
        "{p_true:.0%} on the true class: -log {p_true:g} = {loss:.4f}, nearly zero.",
    ),
    WorkedExample(
        5, (0, 1, 0), (0.33, 0.33, 0.34), 1.1087, 1.099, "uncertain",
        "near uniform, so near the loss of knowing nothing, log 3 = {uniform:.4f}; a little "
        "more, {loss:.4f}, because the true class gets {p_true:g}, less than 1/3.",
    ),
    WorkedExample(
        6, (0.7, 0.2, 0.1), (0.6, 0.3, 0.1), 0.8286, 0.829, "soft target",
        "close match, yet the loss cannot fall below the target's own entropy "
        "H(y) = {entropy:.4f}; only KL(y||yhat) = {kl:.4f} is the prediction's error.",
    ),
    WorkedExample(
        7, (0.4, 0.3, 0.3), (0.8, 0.1, 0.1), 1.4708, 0.891, "soft target",
        "overconfident: 80% where the target has 40%, 10% where it has 30%; "
        "KL(y||yhat) = {kl:.4f} on top of H(y) = {entropy:.4f}.",
    ),
    WorkedExample(
        8, (0.95, 0.03, 0.02), (0.93, 0.04, 0.03), 0.2356, 0.021, "soft target",
        "excellent match: KL(y||yhat) is only {kl:.4f}; nearly all of the loss is the "
        "target's own entropy H(y) = {entropy:.4f}.",
    ),
)

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
