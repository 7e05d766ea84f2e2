"""``crossentropy explain``: one cross-entropy computed step by step, with the numbers.

Every quantity that the loss is made of comes from the library itself
(``logsumexp``, ``softmax``, ``log_softmax``, ``cross_entropy``,
``cross_entropy_grad``, ``entropy``, ``kl_divergence`` and the binary forms);
the few intermediate steps the library does not expose (the row max, the
shifted exponentials and their sum) are shown with plain NumPy and then
checked against the library's log-sum-exp.

    crossentropy explain --logits 2.0,1.0,0.1 --target 0
    crossentropy explain --logits 2.0,1.0,0.1 --soft-target 0.7,0.2,0.1
    crossentropy explain --probs 0.8,0.1,0.1 --target 0
    crossentropy explain --binary --logits 0.8 --target 1
    crossentropy explain --binary --probs 0.3 --soft-target 0.9 --json
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from typing import Any

from crossentropy.cli._args import (
    NEGATIVE_VALUE,
    add_command,
    error,
    float_list,
    logit_list,
    non_negative_int,
)

#: The identity ``CE = H(y) + KL(y || yhat)`` is checked to this tolerance.
IDENTITY_TOLERANCE = 1e-9


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this subcommand's parser to ``subparsers``."""
    parser = add_command(
        subparsers, "explain", run,
        help="compute one cross-entropy step by step, with the numbers",
        description=(
            "Compute one cross-entropy step by step: max subtraction, exp, sum,\n"
            "log-sum-exp, softmax, the per-class terms -y log yhat, the loss, the\n"
            "gradient yhat - y, and the decomposition CE = H(y) + KL(y || yhat).\n"
            "Every loss number comes from the library's own functions."
        ),
        epilog=(
            "examples:\n"
            "  crossentropy explain --logits 2.0,1.0,0.1 --target 0\n"
            "  crossentropy explain --logits 2.0,1.0,0.1 --soft-target 0.7,0.2,0.1\n"
            "  crossentropy explain --probs 0.8,0.1,0.1 --target 0\n"
            "  crossentropy explain --binary --logits 0.8 --target 1\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument(
        "--logits", type=logit_list, metavar="Z",
        help="comma-separated logits, e.g. 2.0,1.0,0.1 (-inf: a class of probability 0)",
    )
    given.add_argument(
        "--probs",
        type=float_list,
        metavar="P",
        help="comma-separated predicted probabilities (summing to 1), e.g. 0.8,0.1,0.1",
    )
    wanted = parser.add_mutually_exclusive_group(required=True)
    wanted.add_argument(
        "--target",
        type=non_negative_int,
        metavar="K",
        help="index of the true class (with --binary: the label, 0 or 1)",
    )
    wanted.add_argument(
        "--soft-target",
        type=float_list,
        metavar="Y",
        help="a target distribution, e.g. 0.7,0.2,0.1 (with --binary: one probability)",
    )
    parser.add_argument(
        "--binary",
        action="store_true",
        help="binary cross-entropy of one logit or probability (sigmoid instead of softmax)",
    )
    parser.add_argument("--json", action="store_true", help="print the steps as JSON")
    # Let "--logits -1,2" read as a value, not as an unknown option "-1,2".
    parser._negative_number_matcher = NEGATIVE_VALUE


# --------------------------------------------------------------------------- #
# argument checks that need more than one option (the library checks the rest)


def _input_option(args: argparse.Namespace) -> str:
    return "--logits" if args.logits is not None else "--probs"


def _target_option(args: argparse.Namespace) -> str:
    return "--target" if args.target is not None else "--soft-target"


def _check_lengths(args: argparse.Namespace) -> str | None:
    values = args.logits if args.logits is not None else args.probs
    if args.binary:
        if len(values) != 1:
            return (
                f"argument {_input_option(args)}: with --binary, expected one value, "
                f"got {len(values)}"
            )
        if args.target is not None and args.target > 1:
            return f"argument --target: with --binary, expected 0 or 1, got {args.target}"
        if args.soft_target is not None:
            if len(args.soft_target) != 1:
                return (
                    "argument --soft-target: with --binary, expected one probability, "
                    f"got {len(args.soft_target)} values"
                )
            if not 0.0 <= args.soft_target[0] <= 1.0:
                return (
                    "argument --soft-target: with --binary, expected a probability in [0, 1], "
                    f"got {args.soft_target[0]}"
                )
        return None
    if len(values) < 2:
        return (
            f"argument {_input_option(args)}: expected at least 2 classes, got {len(values)} "
            "(use --binary for a single logit or probability)"
        )
    if args.target is not None and args.target >= len(values):
        return (
            f"argument --target: expected a class index in [0, {len(values) - 1}], "
            f"got {args.target}"
        )
    if args.soft_target is not None and len(args.soft_target) != len(values):
        return (
            f"argument --soft-target: expected {len(values)} values (one per class of "
            f"{_input_option(args)}), got {len(args.soft_target)}"
        )
    return None


def _option_for(message: str, args: argparse.Namespace) -> str:
    """The command-line option that a library error message is about."""
    head = message.split(":", 1)[0].strip()
    if head in ("target", "y"):
        return _target_option(args)
    return _input_option(args)


# --------------------------------------------------------------------------- #
# the computation: a dict of named steps, every loss number from the library


def _floats(x: Any) -> list[float]:
    import numpy as np

    return [float(v) for v in np.asarray(x, dtype=np.float64).reshape(-1)]


def _scalar(x: Any) -> float:
    import numpy as np

    return float(np.asarray(x, dtype=np.float64).reshape(()))


def _terms(y: Any, log_yhat: Any) -> list[float]:
    """The per-class terms ``-y_c log yhat_c``, with ``0 * log 0 = 0``."""
    return [0.0 if yc == 0 else -yc * lc for yc, lc in zip(y, log_yhat, strict=True)]


def _information_view(steps: dict[str, Any], y: Any, yhat: Any) -> None:
    import crossentropy as ce

    steps["entropy"] = _scalar(ce.entropy(y))
    steps["kl"] = _scalar(ce.kl_divergence(y, yhat))
    steps["h_plus_kl"] = steps["entropy"] + steps["kl"]
    both_infinite = math.isinf(steps["loss"]) and steps["h_plus_kl"] == steps["loss"]
    steps["identity_error"] = 0.0 if both_infinite else abs(steps["h_plus_kl"] - steps["loss"])


def compute_multiclass(logits: Sequence[float] | None = None, probs: Sequence[float] | None = None,
                       target: int | None = None,
                       soft_target: Sequence[float] | None = None) -> dict[str, Any]:
    """All the steps of a softmax cross-entropy of one row, as a dict of floats and lists."""
    import numpy as np

    import crossentropy as ce

    if soft_target is not None:
        y_arg = np.asarray([soft_target], dtype=np.float64)
    else:
        y_arg = np.asarray([target], dtype=np.int64)
    steps: dict[str, Any] = {"mode": "logits" if logits is not None else "probs"}

    if logits is not None:
        z = np.asarray([logits], dtype=np.float64)
        n_classes = z.shape[-1]
        m = float(np.max(z))
        shifted = z[0] - m
        exps = np.exp(shifted)
        steps.update(
            logits=_floats(z),
            max=m,
            shifted=_floats(shifted),
            exp=_floats(exps),
            sum=float(np.sum(exps)),
        )
        steps["max_plus_log_sum"] = m + math.log(steps["sum"])
        steps["logsumexp"] = _scalar(ce.logsumexp(z, axis=-1))
        steps["softmax"] = _floats(ce.softmax(z, axis=-1))
        steps["log_softmax"] = _floats(ce.log_softmax(z, axis=-1))
        steps["loss"] = _scalar(ce.cross_entropy(z, y_arg, reduction="sum"))
        steps["gradient"] = _floats(ce.cross_entropy_grad(z, y_arg, reduction="sum"))
        if target is not None:
            steps["target_logit"] = float(z[0, target])
    else:
        p = np.asarray([probs], dtype=np.float64)
        n_classes = p.shape[-1]
        steps["loss"] = _scalar(ce.cross_entropy_from_probs(p, y_arg, reduction="sum"))
        steps["softmax"] = _floats(p)
        with np.errstate(divide="ignore"):
            log_p = np.log(p)
        steps["log_softmax"] = _floats(log_p)
        # The gradient with respect to the logits that would give these probabilities
        # (z = log p, up to a constant): the library's own softmax-CE gradient.
        steps["gradient"] = _floats(ce.cross_entropy_grad(log_p, y_arg, reduction="sum"))

    y = soft_target if soft_target is not None else [float(c == target) for c in range(n_classes)]
    steps["target"] = target
    steps["target_distribution"] = [float(v) for v in y]
    steps["terms"] = _terms(steps["target_distribution"], steps["log_softmax"])
    steps["sum_of_terms"] = math.fsum(steps["terms"])
    _information_view(steps, np.asarray(y, dtype=np.float64), np.asarray(steps["softmax"]))
    return steps


def compute_binary(logit: float | None = None, prob: Any = None,
                   label: Any = None) -> dict[str, Any]:
    """All the steps of a binary cross-entropy of one example, label ``y`` in ``[0, 1]``."""
    import numpy as np

    import crossentropy as ce

    y = float(label)
    y_arr = np.asarray([y], dtype=np.float64)
    steps: dict[str, Any] = {"mode": "binary-logits" if logit is not None else "binary-probs",
                             "y": y}
    if logit is not None:
        z = float(logit)
        z_arr = np.asarray([z], dtype=np.float64)
        # sigmoid(z) is the softmax of the two logits [0, z]: BCE is 2-class CE.
        pair = np.asarray([[0.0, z]])
        p_pair = _floats(ce.softmax(pair, axis=-1))
        log_pair = _floats(ce.log_softmax(pair, axis=-1))
        steps.update(
            logit=z,
            relu=max(z, 0.0),
            z_times_y=0.0 if y == 0 else z * y,  # 0 * -inf = 0: the term is absent
            softplus_neg_abs=math.log1p(math.exp(-abs(z))),
            p=p_pair[1],
            log_p=log_pair[1],
            log_1mp=log_pair[0],
        )
        steps["stable_form"] = steps["relu"] - steps["z_times_y"] + steps["softplus_neg_abs"]
        steps["loss"] = _scalar(ce.binary_cross_entropy_with_logits(z_arr, y_arr, reduction="sum"))
        steps["gradient"] = _scalar(
            ce.binary_cross_entropy_with_logits_grad(z_arr, y_arr, reduction="sum")
        )
        steps["as_two_class_ce"] = _scalar(
            ce.cross_entropy(pair, np.asarray([[1.0 - y, y]]), reduction="sum")
        )
    else:
        p = float(prob)
        steps["p"] = p
        steps["loss"] = _scalar(
            ce.binary_cross_entropy(np.asarray([p]), y_arr, reduction="sum")
        )
        steps["log_p"] = math.log(p) if p > 0 else -math.inf
        steps["log_1mp"] = math.log1p(-p) if p < 1 else -math.inf
        if 0.0 < p < 1.0:
            # gradient with respect to the logit z = log(p / (1 - p)) that gives p
            z_arr = np.asarray([math.log(p) - math.log1p(-p)])
            steps["gradient"] = _scalar(
                ce.binary_cross_entropy_with_logits_grad(z_arr, y_arr, reduction="sum")
            )
        else:
            steps["gradient"] = None
    steps["terms"] = _terms([y, 1.0 - y], [steps["log_p"], steps["log_1mp"]])
    steps["sum_of_terms"] = math.fsum(steps["terms"])
    if logit is not None:
        yhat = np.asarray([p_pair[1], p_pair[0]])  # 1 - p from the softmax, not by subtraction
    else:
        yhat = np.asarray([steps["p"], 1.0 - steps["p"]])
    _information_view(steps, np.asarray([y, 1.0 - y]), yhat)
    return steps


# --------------------------------------------------------------------------- #
# rendering


def _n(x: Any) -> str:
    if x is None:
        return "undefined"
    return f"{x:.6g}" if x != 0 else "0"


def _v(xs: Any) -> str:
    return "[" + ", ".join(_n(x) for x in xs) + "]"


def _check(steps: dict[str, Any]) -> str:
    if math.isinf(steps["h_plus_kl"]) and not math.isinf(steps["loss"]):
        return "not checkable: a probability underflowed to 0 (CE from logits is exact)"
    if math.isinf(steps["loss"]) and steps["identity_error"] == 0.0:
        return "CE = H + KL holds: both are inf (a class with y > 0 has probability 0)"
    ok = steps["identity_error"] <= IDENTITY_TOLERANCE * max(1.0, abs(steps["loss"]))
    verdict = "holds" if ok else "FAILS"
    return f"CE = H + KL {verdict} (difference {steps['identity_error']:.1e})"


def _render_multiclass(s: dict[str, Any]) -> list[str]:
    y = s["target_distribution"]
    if s["target"] is not None:
        what = f"class {s['target']} (one-hot y = {_v(y)})"
    else:
        what = f"the soft target y = {_v(y)}"
    if s["mode"] == "logits":
        title = f"Softmax cross-entropy of logits z = {_v(s['logits'])} against {what}"
        row = [
            ("1. subtract the max (exp cannot overflow)", f"m = max(z) = {_n(s['max'])}"),
            ("", f"z - m = {_v(s['shifted'])}"),
            ("2. exponentiate", f"exp(z - m) = {_v(s['exp'])}"),
            ("3. sum", f"S = {_n(s['sum'])}"),
            ("4. log-sum-exp", f"lse = m + log S = {_n(s['max_plus_log_sum'])}"),
            ("", f"crossentropy.logsumexp(z) = {_n(s['logsumexp'])}"),
            ("5. softmax", f"yhat = exp(z - lse) = {_v(s['softmax'])}"),
            ("6. log-probabilities", f"log yhat = z - lse = {_v(s['log_softmax'])}"),
        ]
    else:
        title = f"Cross-entropy of probabilities yhat = {_v(s['softmax'])} against {what}"
        row = [("1-6. log-probabilities", f"log yhat = {_v(s['log_softmax'])}")]
    row += _loss_rows(s, 7, "per-class terms -y_c log yhat_c", "CE")
    if s.get("target_logit") is not None:
        row.append(
            (
                "   shortcut for a hard target",
                f"CE = lse - z[{s['target']}] = {_n(s['logsumexp'])} - "
                f"{_n(s['target_logit'])} = {_n(s['logsumexp'] - s['target_logit'])}",
            )
        )
    grad_label = "9. gradient dCE/dz = yhat - y"
    if s["mode"] == "probs":
        grad_label = "9. gradient wrt logits z = log yhat"
    row.append((grad_label, f"{_v(s['gradient'])}  (crossentropy.cross_entropy_grad)"))
    row += _information_rows(s, "10.")
    return _page(title, row)


def _loss_name(s: dict[str, Any]) -> str:
    return {
        "logits": "cross_entropy(z, y)",
        "probs": "cross_entropy_from_probs(yhat, y)",
        "binary-logits": "binary_cross_entropy_with_logits(z, y)",
        "binary-probs": "binary_cross_entropy(p, y)",
    }[s["mode"]]


def _loss_rows(s: dict[str, Any], step: int, terms: str, symbol: str) -> list[tuple[str, str]]:
    """Steps ``step`` and ``step + 1``: the terms, their sum, and the library's value."""
    return [
        (f"{step}. {terms}", _v(s["terms"])),
        (f"{step + 1}. the loss: their sum", f"{symbol} = {_n(s['sum_of_terms'])}"),
        ("", f"crossentropy.{_loss_name(s)} = {_n(s['loss'])}"),
    ]


def _information_rows(s: dict[str, Any], number_: str) -> list[tuple[str, str]]:
    return [
        (f"{number_} information view", f"H(y) = {_n(s['entropy'])}   (crossentropy.entropy)"),
        ("", f"KL(y || yhat) = {_n(s['kl'])}   (crossentropy.kl_divergence)"),
        ("", f"H + KL = {_n(s['h_plus_kl'])}, CE = {_n(s['loss'])}: {_check(s)}"),
    ]


def _render_binary(s: dict[str, Any]) -> list[str]:
    y = s["y"]
    if s["mode"] == "binary-logits":
        title = f"Binary cross-entropy of the logit z = {_n(s['logit'])} against y = {_n(y)}"
        row = [
            ("1. probability p = sigmoid(z)", f"p = softmax([0, z])[1] = {_n(s['p'])}"),
            ("2. log-probabilities", f"log p = {_n(s['log_p'])}, log(1 - p) = {_n(s['log_1mp'])}"),
        ]
    else:
        title = f"Binary cross-entropy of the probability p = {_n(s['p'])} against y = {_n(y)}"
        logs = f"log p = {_n(s['log_p'])}, log(1 - p) = {_n(s['log_1mp'])}"
        row = [("1-2. log-probabilities", logs)]
    row += _loss_rows(s, 3, "terms -y log p, -(1-y) log(1-p)", "BCE")
    if s["mode"] == "binary-logits":
        row += [
            (
                "   stable form, never log(sigmoid(z))",
                f"max(z, 0) - z*y + log(1 + exp(-|z|)) = {_n(s['relu'])} - {_n(s['z_times_y'])} "
                f"+ {_n(s['softplus_neg_abs'])} = {_n(s['stable_form'])}",
            ),
            (
                "   same as 2-class softmax CE",
                f"crossentropy.cross_entropy([0, z], [1-y, y]) = {_n(s['as_two_class_ce'])}",
            ),
            ("5. gradient dBCE/dz = p - y", f"{_n(s['gradient'])}"),
        ]
    else:
        row.append(("5. gradient wrt z = logit(p): p - y", _n(s["gradient"])))
    row += _information_rows(s, "6.")
    return _page(title, row)


def _page(title: str, rows: list[tuple[str, str]]) -> list[str]:
    """The title, a blank line, then the steps as a table."""
    return [title, "", *_table(rows)]


def _table(rows: list[tuple[str, str]]) -> list[str]:
    """Two aligned columns, step and value (tabulate, no borders)."""
    from tabulate import tabulate

    text = tabulate(rows, tablefmt="plain", disable_numparse=True)
    return [line.rstrip() for line in text.splitlines()]


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    return x


def run(args: argparse.Namespace) -> int:
    """Print one loss computed step by step (or the steps as JSON); the exit status."""
    problem = _check_lengths(args)
    if problem:
        return error(args, problem)
    try:
        if args.binary:
            label = args.target if args.target is not None else args.soft_target[0]
            steps = compute_binary(
                logit=args.logits[0] if args.logits is not None else None,
                prob=args.probs[0] if args.probs is not None else None,
                label=label,
            )
        else:
            steps = compute_multiclass(
                logits=args.logits,
                probs=args.probs,
                target=args.target,
                soft_target=args.soft_target,
            )
    except (ValueError, TypeError, IndexError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return error(args, f"argument {_option_for(message, args)}: {message}")
    if args.json:
        print(json.dumps(_json_safe(steps), indent=2))
    else:
        render = _render_binary if args.binary else _render_multiclass
        print("\n".join(render(steps)))
    return 0
