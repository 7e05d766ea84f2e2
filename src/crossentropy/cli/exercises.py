"""``crossentropy exercises``: practice problems, and a checker that explains the answer.

    crossentropy exercises                 list the exercises
    crossentropy exercises check 1 0.357   check an answer to exercise 1

Every right answer is computed by the library when it is asked for, never
typed in; the explanations quote the library's numbers too.
"""

from __future__ import annotations

import argparse
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from crossentropy.cli._args import NEGATIVE_VALUE, number

#: An answer is right when it is within this much of the library's value:
#: max(ABSOLUTE_TOLERANCE, RELATIVE_TOLERANCE * |value|), i.e. about 3 decimals.
ABSOLUTE_TOLERANCE = 1e-3
RELATIVE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Exercise:
    title: str
    question: str
    answer: Callable[[], float]  # the right answer, computed by the library
    explain: Callable[[], str]  # why, with the library's numbers


def _np():
    import numpy as np

    return np


def _ce():
    import crossentropy

    return crossentropy


def _f(x) -> float:
    return float(_np().asarray(x, dtype=float).reshape(()))


def _vec(xs) -> str:
    return "[" + ", ".join(f"{float(x):.4f}" for x in _np().asarray(xs).reshape(-1)) + "]"


# 1 ------------------------------------------------------------------------- #
def _ex1_answer() -> float:
    return _f(_ce().cross_entropy_from_probs([[0.2, 0.7, 0.1]], [1], reduction="sum"))


def _ex1_explain() -> str:
    return (
        "With a one-hot target only the true class's term survives: "
        f"CE = -(0 log 0.2 + 1 log 0.7 + 0 log 0.1) = -log 0.7 = {_ex1_answer():.4f}."
    )


# 2 ------------------------------------------------------------------------- #
_EX2_LOGITS = [[1.0, 2.0, 0.5]]


def _ex2_grad():
    np = _np()
    return np.asarray(_ce().cross_entropy_grad(_EX2_LOGITS, [1], reduction="sum"))


def _ex2_answer() -> float:
    return float(_ex2_grad()[0, 1])


def _ex2_explain() -> str:
    p = _ce().softmax(_EX2_LOGITS)
    return (
        "Write CE = log sum_c exp(z_c) - z_t. The derivative of the log-sum-exp is the "
        "softmax, and the derivative of -z_t is -1 at the true class, so "
        f"dCE/dz = softmax(z) - onehot(t) = {_vec(p)} - [0, 1, 0] = {_vec(_ex2_grad())}. "
        f"The true class's component is p_1 - 1 = {_ex2_answer():.4f}: negative, so "
        "gradient descent raises that logit; the others are positive and sum to its "
        "magnitude (each row of the gradient sums to 0)."
    )


# 3 ------------------------------------------------------------------------- #
_EX3 = ([[0.6, 0.3, 0.1]], [[0.5, 0.4, 0.1]])


def _ex3_answer() -> float:
    y, p = _EX3
    return _f(_ce().cross_entropy_from_probs(p, _np().asarray(y), reduction="sum"))


def _ex3_explain() -> str:
    np = _np()
    y, p = np.asarray(_EX3[0]), np.asarray(_EX3[1])
    terms = -y * np.log(p)
    return (
        "With a soft target every class with y_c > 0 contributes -y_c log yhat_c: "
        f"terms {_vec(terms)}, sum {_ex3_answer():.4f}. It cannot be below "
        f"H(y) = {_f(_ce().entropy(y)):.4f}, the target's own entropy; "
        f"the rest, KL(y || yhat) = {_f(_ce().kl_divergence(y, p)):.4f}, is the "
        "prediction's error."
    )


# 4 ------------------------------------------------------------------------- #
def _ex4_answer() -> float:
    return _f(_ce().binary_cross_entropy_with_logits([1.5], [1.0], reduction="sum"))


def _ex4_explain() -> str:
    two_class = _f(_ce().cross_entropy([[0.0, 1.5]], [1], reduction="sum"))
    return (
        f"BCE = -log sigmoid(1.5) = log(1 + exp(-1.5)) = {_ex4_answer():.4f}. "
        "sigmoid(z) is the softmax of the two logits [0, z], so the same number is the "
        f"2-class cross-entropy of logits [0, 1.5] with class 1: {two_class:.4f} "
        "(crossentropy.cross_entropy). One logit with BCE and two logits with CE are "
        "the same model; only the second class's logit is pinned to 0."
    )


# 5 ------------------------------------------------------------------------- #
_EX5_LOGITS = [[1000.0, 999.0, 998.0]]


def _ex5_answer() -> float:
    return _f(_ce().cross_entropy(_EX5_LOGITS, [2], reduction="sum"))


def _ex5_explain() -> str:
    lse = _f(_ce().logsumexp(_EX5_LOGITS))
    return (
        "exp(1000) overflows to inf in float64 (and float32), so the naive "
        "softmax gives inf / inf = nan. Subtract the max first: z - 1000 = [0, -1, -2], "
        f"log-sum-exp = 1000 + log(1 + e^-1 + e^-2) = {lse:.4f}, and "
        f"CE = lse - z_2 = {lse:.4f} - 998 = {_ex5_answer():.4f}. Only the differences "
        "between logits matter: [2, 1, 0] gives the same loss."
    )


# 6 ------------------------------------------------------------------------- #
_EX6 = ([0.5, 0.5, 0.0], [0.25, 0.5, 0.25])


def _ex6_answer() -> float:
    y, p = _EX6
    return _f(_ce().kl_divergence(y, p))


def _ex6_explain() -> str:
    y, p = _EX6
    ce_value = _f(_ce().cross_entropy_from_probs([p], [y], reduction="sum"))
    h = _f(_ce().entropy(y))
    return (
        f"CE(y, yhat) = -(0.5 log 0.25 + 0.5 log 0.5) = {ce_value:.4f}; "
        f"H(y) = -(0.5 log 0.5 + 0.5 log 0.5) = log 2 = {h:.4f} (the 0 log 0 term is 0); "
        f"KL(y || yhat) = CE - H = {_ex6_answer():.4f} = 0.5 log(0.5/0.25) + 0.5 log(0.5/0.5). "
        "Minimising CE over yhat minimises KL: H(y) does not depend on the model."
    )


# 7 ------------------------------------------------------------------------- #
_EX7_LOGITS, _EX7_EPS = [[3.0, 1.0, 0.0]], 0.1


def _ex7_answer() -> float:
    return _f(_ce().cross_entropy(_EX7_LOGITS, [0], label_smoothing=_EX7_EPS, reduction="sum"))


def _ex7_explain() -> str:
    np = _np()
    ce = _ce()
    y = (1 - _EX7_EPS) * np.eye(3)[0] + _EX7_EPS / 3
    log_p = np.asarray(ce.log_softmax(_EX7_LOGITS))[0]
    hard = _f(ce.cross_entropy(_EX7_LOGITS, [0], reduction="sum"))
    return (
        f"The target becomes (1 - 0.1) * [1, 0, 0] + 0.1 / 3 = {_vec(y)}; "
        f"log softmax(z) = {_vec(log_p)}; CE = -sum y_c log p_c = {_ex7_answer():.4f}, "
        f"more than the unsmoothed {hard:.4f}: smoothing charges the model for the "
        "small classes too, so it stops rewarding ever larger logit gaps."
    )


# 8 ------------------------------------------------------------------------- #
_EX8 = ([[2.0, 0.0], [0.0, 1.0]], [0, 1], [1.0, 3.0])


def _ex8_answer() -> float:
    z, t, w = _EX8
    np = _np()
    return _f(_ce().cross_entropy(z, np.asarray(t), weight=np.asarray(w)))


def _ex8_explain() -> str:
    z, t, w = _EX8
    np = _np()
    per_row = np.asarray(_ce().cross_entropy(z, np.asarray(t), reduction="none"))
    return (
        f"Unweighted row losses: {_vec(per_row)} (log(1 + e^-2) and log(1 + e^-1)). "
        "Each row is multiplied by its true class's weight, and the mean divides by the "
        f"sum of those weights, not by the number of rows: (1 * {per_row[0]:.4f} + "
        f"3 * {per_row[1]:.4f}) / (1 + 3) = {_ex8_answer():.4f}. This is what PyTorch's "
        "cross_entropy(weight=...) does with reduction='mean'."
    )


# 9 ------------------------------------------------------------------------- #
def _ex9_answer() -> float:
    return _f(_ce().cross_entropy(_np().zeros((1, 10)), [3], reduction="sum"))


def _ex9_explain() -> str:
    return (
        f"Equal logits give the uniform softmax 1/10, so CE = -log(1/10) = log 10 = "
        f"{_ex9_answer():.4f}, whatever the true class. A freshly initialised 10-class "
        "network starts near this value; a first loss far above it means the initial "
        "logits are too large."
    )


EXERCISES: tuple[Exercise, ...] = (
    Exercise(
        "Compute a loss by hand",
        "Three classes, the true class is 1, the model predicts yhat = [0.2, 0.7, 0.1]. "
        "What is the cross-entropy (natural log)?",
        _ex1_answer, _ex1_explain,
    ),
    Exercise(
        "Derive the gradient",
        "For logits z = [1.0, 2.0, 0.5] and true class 1, derive dCE/dz from "
        "CE = -log softmax(z)_1. What is the component dCE/dz_1?",
        _ex2_answer, _ex2_explain,
    ),
    Exercise(
        "Soft labels",
        "The target is the distribution y = [0.6, 0.3, 0.1] and the prediction is "
        "yhat = [0.5, 0.4, 0.1]. What is the cross-entropy?",
        _ex3_answer, _ex3_explain,
    ),
    Exercise(
        "BCE vs CE for two classes",
        "A binary classifier outputs the logit z = 1.5 and the label is y = 1. What is the "
        "binary cross-entropy? Which 2-class softmax cross-entropy gives the same number?",
        _ex4_answer, _ex4_explain,
    ),
    Exercise(
        "Stability with logits of 1000",
        "Logits z = [1000, 999, 998], true class 2. What is the cross-entropy? "
        "(What does exp(1000) do in float64?)",
        _ex5_answer, _ex5_explain,
    ),
    Exercise(
        "KL decomposition",
        "Target y = [0.5, 0.5, 0], prediction yhat = [0.25, 0.5, 0.25]. "
        "Using CE = H(y) + KL(y || yhat), what is KL(y || yhat)?",
        _ex6_answer, _ex6_explain,
    ),
    Exercise(
        "Label smoothing",
        "Logits z = [3, 1, 0], true class 0, label smoothing 0.1 (the target becomes "
        "(1 - 0.1) * onehot + 0.1 / 3). What is the loss?",
        _ex7_answer, _ex7_explain,
    ),
    Exercise(
        "Class weights",
        "Two rows: logits [2, 0] with class 0, and logits [0, 1] with class 1. Class "
        "weights are [1, 3]. What is the mean weighted cross-entropy (PyTorch's convention)?",
        _ex8_answer, _ex8_explain,
    ),
    Exercise(
        "The loss of a network that knows nothing",
        "Ten classes, all ten logits equal (a network at initialisation). What is the "
        "cross-entropy?",
        _ex9_answer, _ex9_explain,
    ),
)


def is_correct(given: float, expected: float) -> bool:
    tolerance = max(ABSOLUTE_TOLERANCE, RELATIVE_TOLERANCE * abs(expected))
    return math.isclose(given, expected, rel_tol=0.0, abs_tol=tolerance)


def exercise_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= len(EXERCISES):
        raise argparse.ArgumentTypeError(
            f"expected an exercise number from 1 to {len(EXERCISES)}, got {text!r}"
        )
    return value


def render_list() -> str:
    lines = [
        f"{len(EXERCISES)} exercises. Answer with: crossentropy exercises check N ANSWER",
        "(natural logs; an answer within 0.001 counts).",
        "",
    ]
    for i, ex in enumerate(EXERCISES, start=1):
        lines.append(f"{i}. {ex.title}")
        lines += textwrap.wrap(ex.question, width=88, initial_indent="   ", subsequent_indent="   ")
        lines.append("")
    return "\n".join(lines).rstrip()


def check(n: int, given: float) -> tuple[bool, str]:
    """Whether ``given`` answers exercise ``n`` (1-based), and the explanation."""
    ex = EXERCISES[n - 1]
    expected = ex.answer()
    ok = is_correct(given, expected)
    verdict = (
        f"Correct: {expected:.4f}." if ok else f"Not quite: you gave {given:g}, the answer is "
        f"{expected:.4f}."
    )
    text = f"Exercise {n}, {ex.title}. {verdict}\n\n" + "\n".join(
        textwrap.wrap(ex.explain(), width=88)
    )
    return ok, text


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "exercises",
        help="practice problems; 'exercises check N ANSWER' checks an answer",
        description="List practice problems, or check an answer and explain the right one.",
    )
    actions = parser.add_subparsers(dest="action", metavar="{list,check}")
    actions.add_parser("list", help="list the exercises (the default)")
    check_parser = actions.add_parser(
        "check", help="check an answer", description="Check a numeric answer to one exercise."
    )
    check_parser.add_argument("n", metavar="N", type=exercise_number, help="exercise number")
    check_parser.add_argument("answer", metavar="ANSWER", type=number, help="your numeric answer")
    check_parser._negative_number_matcher = NEGATIVE_VALUE  # "-0.37" and "-1e-3" are answers
    parser.set_defaults(func=run, _parser=parser)


def run(args: argparse.Namespace) -> int:
    if args.action == "check":
        ok, text = check(args.n, args.answer)
        print(text)
        return 0 if ok else 1
    print(render_list())
    return 0
