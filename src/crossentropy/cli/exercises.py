"""``crossentropy exercises``: practice problems, and a checker that explains the answer.

    crossentropy exercises                              list the exercises
    crossentropy exercises check 1 0.357                check an answer to exercise 1
    crossentropy exercises check 18 --file mine.py      grade your own code

Three kinds of exercise: *numeric* (compute a number), *derivation* (derive a
formula, answer with its value; the solution is shown step by step) and
*coding* (write a function in a file; it is run and graded against the
library: values, stability at logits of 1e4, finite-difference gradients).

Every right answer is computed by the library when it is asked for, never
typed in (unit conversions use :mod:`math`); the explanations quote the
library's numbers too. A wrong answer is compared with the typical mistakes
(the sign, the base of the logarithm, classes counted from 1, a mean for a sum
and the exercise's own pitfalls), each computed the same way, and the
checker names the mistake it matches.

Classes are numbered from 0, as in the library's targets: "class 1" is the
second entry.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossentropy.cli._args import NEGATIVE_VALUE, add_command, error, existing_file, number

#: An answer is right when it is within this much of the library's value, whatever
#: its size: "within 0.001" as the list says (give 3 or 4 decimals).
ABSOLUTE_TOLERANCE = 1e-3

#: Where each page lives in the documentation (the checker points the reader there).
DOCS_URL = "docs/"

Mistakes = Callable[[], list[tuple[float, str]]]


def _no_mistakes() -> list[tuple[float, str]]:
    return []


@dataclass(frozen=True)
class Exercise:
    """A practice problem: its question, the library's answer and the explanation."""

    title: str
    question: str
    answer: Callable[[], float] | None  # the right answer, computed by the library
    explain: Callable[[], str | list[str]]  # why, with the library's numbers; a list = steps
    page: str  # the documentation page that teaches it
    kind: str = "numeric"  # "numeric", "derivation" or "coding"
    mistakes: Mistakes = _no_mistakes  # typical wrong answers and what each means
    logs: bool = True  # the answer is in nats: a base-2 or base-10 slip is possible
    grade: Callable[[object], list[Finding]] | None = None  # coding exercises


@dataclass(frozen=True)
class Finding:
    """One check of a coding exercise: its name, whether it passed, what was seen."""

    name: str
    ok: bool
    detail: str
    hint: str = ""


def _np() -> Any:
    import numpy as np

    return np


def _ce() -> Any:
    import crossentropy

    return crossentropy


def _f(x: Any) -> float:
    return float(_np().asarray(x, dtype=float).reshape(()))


def _vec(xs: Any) -> str:
    return "[" + ", ".join(f"{float(x):.4f}" for x in _np().asarray(xs).reshape(-1)) + "]"


# Hints shared by several exercises.
ONE_BASED = (
    "You counted the classes from 1. The exercises count from 0, as the library's "
    "targets (and Python's indices) do: class {t} is entry number {t1} of the vector."
)
MEAN_NOT_SUM = (
    "That is the mean over the {n} rows; the question asks for the sum (multiply by {n})."
)
SUM_NOT_MEAN = (
    "That is the sum over the rows; the question asks for the mean (divide by {n})."
)


# 1 ------------------------------------------------------------------------- #
def _ex1_answer() -> float:
    return _f(_ce().cross_entropy_from_probs([[0.2, 0.7, 0.1]], [1], reduction="sum"))


def _ex1_mistakes() -> list[tuple[float, str]]:
    first = _f(_ce().cross_entropy_from_probs([[0.2, 0.7, 0.1]], [0], reduction="sum"))
    return [(first, ONE_BASED.format(t=1, t1=2) + " -log 0.2 is the loss for class 0.")]


def _ex1_explain() -> str:
    return (
        "With a one-hot target only the true class's term survives: "
        f"CE = -(0 log 0.2 + 1 log 0.7 + 0 log 0.1) = -log 0.7 = {_ex1_answer():.4f}."
    )


_EXERCISE_1 = Exercise(
    "Compute a loss by hand",
    "Three classes, the true class is class 1 (counting from 0, so the second entry); "
    "the model predicts yhat = [0.2, 0.7, 0.1]. What is the cross-entropy (natural log)?",
    _ex1_answer, _ex1_explain, "theory/foundations.md", mistakes=_ex1_mistakes,
)


# 2 ------------------------------------------------------------------------- #
_EX2_LOGITS = [[1.0, 2.0, 0.5]]


def _ex2_grad(target: int = 1) -> Any:
    np = _np()
    return np.asarray(_ce().cross_entropy_grad(_EX2_LOGITS, [target], reduction="sum"))


def _ex2_answer() -> float:
    return float(_ex2_grad()[0, 1])


def _ex2_mistakes() -> list[tuple[float, str]]:
    p1 = float(_np().asarray(_ce().softmax(_EX2_LOGITS))[0, 1])
    return [
        (float(_ex2_grad(0)[0, 0]), ONE_BASED.format(t=1, t1=2)
         + " Your number is dCE/dz_0 for true class 0."),
        (p1, "That is softmax(z)_1 alone: the true class's component also subtracts "
             "its target, 1."),
    ]


def _ex2_explain() -> list[str]:
    p = _ce().softmax(_EX2_LOGITS)
    return [
        "1. -log softmax(z)_t = -(z_t - log sum_c exp(z_c)), so CE = log sum_c exp(z_c) - z_t.",
        "2. The derivative of the log-sum-exp with respect to z_k is exp(z_k) / sum_c "
        "exp(z_c) = softmax(z)_k.",
        "3. The derivative of -z_t is -1 at k = t and 0 elsewhere: -onehot(t).",
        f"4. dCE/dz = softmax(z) - onehot(t) = {_vec(p)} - [0, 1, 0] = {_vec(_ex2_grad())}.",
        f"5. The true class's component is p_1 - 1 = {_ex2_answer():.4f}: negative, so "
        "gradient descent raises that logit; the others are positive and sum to its "
        "magnitude (each row of the gradient sums to 0).",
    ]


_EXERCISE_2 = Exercise(
    "Derive the gradient",
    "For logits z = [1.0, 2.0, 0.5] and true class 1 (counting from 0), derive dCE/dz "
    "from CE = -log softmax(z)_1. What is the component dCE/dz_1?",
    _ex2_answer, _ex2_explain, "theory/gradient.md", kind="derivation",
    mistakes=_ex2_mistakes, logs=False,
)


# 3 ------------------------------------------------------------------------- #
_EX3 = ([[0.6, 0.3, 0.1]], [[0.5, 0.4, 0.1]])


def _ex3_answer() -> float:
    y, p = _EX3
    return _f(_ce().cross_entropy_from_probs(p, _np().asarray(y), reduction="sum"))


def _ex3_mistakes() -> list[tuple[float, str]]:
    np = _np()
    y, p = np.asarray(_EX3[0]), np.asarray(_EX3[1])
    swapped = _f(_ce().cross_entropy_from_probs(y, p, reduction="sum"))
    return [
        (_f(_ce().entropy(y)), "That is H(y), the target's own entropy: the floor of the "
                               "loss, not the loss. Weight log yhat, not log y."),
        (_f(_ce().kl_divergence(y, p)), "That is KL(y || yhat), the part of the loss above "
                                        "the entropy; the cross-entropy adds H(y)."),
        (swapped, "You swapped the two: that is -sum yhat_c log y_c. The target weights "
                  "the prediction's logarithms, H(y, yhat) = -sum y_c log yhat_c."),
    ]


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


_EXERCISE_3 = Exercise(
    "Soft labels",
    "The target is the distribution y = [0.6, 0.3, 0.1] and the prediction is "
    "yhat = [0.5, 0.4, 0.1]. What is the cross-entropy?",
    _ex3_answer, _ex3_explain, "theory/foundations.md", mistakes=_ex3_mistakes,
)


# 4 ------------------------------------------------------------------------- #
def _ex4_answer() -> float:
    return _f(_ce().binary_cross_entropy_with_logits([1.5], [1.0], reduction="sum"))


def _ex4_mistakes() -> list[tuple[float, str]]:
    wrong_label = _f(_ce().binary_cross_entropy_with_logits([1.5], [0.0], reduction="sum"))
    return [(wrong_label, "That is the loss for the label y = 0, -log(1 - sigmoid(1.5)).")]


def _ex4_explain() -> str:
    two_class = _f(_ce().cross_entropy([[0.0, 1.5]], [1], reduction="sum"))
    return (
        f"BCE = -log sigmoid(1.5) = log(1 + exp(-1.5)) = {_ex4_answer():.4f}. "
        "sigmoid(z) is the softmax of the two logits [0, z], so the same number is the "
        f"2-class cross-entropy of logits [0, 1.5] with class 1: {two_class:.4f} "
        "(crossentropy.cross_entropy). One logit with BCE and two logits with CE are "
        "the same model; the first class's logit is pinned to 0."
    )


_EXERCISE_4 = Exercise(
    "BCE vs CE for two classes",
    "A binary classifier outputs the logit z = 1.5 and the label is y = 1. What is the "
    "binary cross-entropy? Which 2-class softmax cross-entropy gives the same number?",
    _ex4_answer, _ex4_explain, "theory/foundations.md", mistakes=_ex4_mistakes,
)


# 5 ------------------------------------------------------------------------- #
_EX5_LOGITS = [[1000.0, 999.0, 998.0]]


def _ex5_answer() -> float:
    return _f(_ce().cross_entropy(_EX5_LOGITS, [2], reduction="sum"))


def _ex5_mistakes() -> list[tuple[float, str]]:
    second = _f(_ce().cross_entropy(_EX5_LOGITS, [1], reduction="sum"))
    return [(second, ONE_BASED.format(t=2, t1=3) + " Your number is the loss for the "
                     "logit 999 (class 1); class 2 is the logit 998.")]


def _ex5_explain() -> str:
    lse = _f(_ce().logsumexp(_EX5_LOGITS))
    return (
        "exp(1000) overflows to inf in float64 (and float32), so the naive "
        "softmax gives inf / inf = nan. Subtract the max first: z - 1000 = [0, -1, -2], "
        f"CE = (m - z_2) + log(1 + e^-1 + e^-2) = 2 + {lse - 1000:.4f} = {_ex5_answer():.4f} "
        "(the small numbers first: lse itself is "
        f"{lse:.4f}, and subtracting 998 from it loses digits in float32). Only the "
        "differences between logits matter: [2, 1, 0] gives the same loss."
    )


_EXERCISE_5 = Exercise(
    "Stability with logits of 1000",
    "Logits z = [1000, 999, 998], true class 2 (counting from 0: the logit 998). What is "
    "the cross-entropy? (What does exp(1000) do in float64?)",
    _ex5_answer, _ex5_explain, "theory/stability.md", mistakes=_ex5_mistakes,
)


# 6 ------------------------------------------------------------------------- #
_EX6 = ([0.5, 0.5, 0.0], [0.25, 0.5, 0.25])


def _ex6_answer() -> float:
    y, p = _EX6
    return _f(_ce().kl_divergence(y, p))


def _ex6_mistakes() -> list[tuple[float, str]]:
    y, p = _EX6
    return [
        (_f(_ce().cross_entropy_from_probs([p], [y], reduction="sum")),
         "That is the cross-entropy H(y, yhat); KL is what is left after subtracting H(y)."),
        (_f(_ce().entropy(y)), "That is H(y), the part of the cross-entropy that is *not* KL."),
    ]


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


_EXERCISE_6 = Exercise(
    "KL decomposition",
    "Target y = [0.5, 0.5, 0], prediction yhat = [0.25, 0.5, 0.25]. "
    "Using CE = H(y) + KL(y || yhat), what is KL(y || yhat)?",
    _ex6_answer, _ex6_explain, "theory/foundations.md", mistakes=_ex6_mistakes,
)


# 7 ------------------------------------------------------------------------- #
_EX7_LOGITS, _EX7_EPS = [[3.0, 1.0, 0.0]], 0.1


def _ex7_answer() -> float:
    return _f(_ce().cross_entropy(_EX7_LOGITS, [0], label_smoothing=_EX7_EPS, reduction="sum"))


def _ex7_mistakes() -> list[tuple[float, str]]:
    np = _np()
    hard = _f(_ce().cross_entropy(_EX7_LOGITS, [0], reduction="sum"))
    y_other = np.full(3, _EX7_EPS / 2)
    y_other[0] = 1 - _EX7_EPS  # the other convention: eps spread over the C - 1 wrong classes
    other = _f(_ce().cross_entropy(_EX7_LOGITS, y_other[None], reduction="sum"))
    return [
        (hard, "That is the loss without smoothing: the smoothed target also puts 0.1 / 3 "
               "on every class."),
        (other, "You spread 0.1 over the 2 wrong classes only; the convention here (and "
                "PyTorch's) mixes with the uniform distribution: (1 - 0.1) * onehot + 0.1 / 3."),
    ]


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


_EXERCISE_7 = Exercise(
    "Label smoothing",
    "Logits z = [3, 1, 0], true class 0, label smoothing 0.1 (the target becomes "
    "(1 - 0.1) * onehot + 0.1 / 3). What is the loss?",
    _ex7_answer, _ex7_explain, "theory/foundations.md", mistakes=_ex7_mistakes,
)


# 8 ------------------------------------------------------------------------- #
_EX8 = ([[2.0, 0.0], [0.0, 1.0]], [0, 1], [1.0, 3.0])


def _ex8_answer() -> float:
    z, t, w = _EX8
    np = _np()
    return _f(_ce().cross_entropy(z, np.asarray(t), weight=np.asarray(w)))


def _ex8_mistakes() -> list[tuple[float, str]]:
    z, t, w = _EX8
    np = _np()
    total = _f(_ce().cross_entropy(z, np.asarray(t), weight=np.asarray(w), reduction="sum"))
    return [
        (total / 2, "You divided by the number of rows, 2. With class weights the mean "
                    "divides by the sum of the rows' weights, 1 + 3."),
        (total, "That is the weighted sum; the mean divides it by the sum of the weights, 4."),
        (_f(_ce().cross_entropy(z, np.asarray(t))), "That is the unweighted mean: multiply "
                                                     "each row by its true class's weight."),
    ]


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


_EXERCISE_8 = Exercise(
    "Class weights",
    "Two rows: logits [2, 0] with class 0, and logits [0, 1] with class 1. Class "
    "weights are [1, 3]. What is the mean weighted cross-entropy (PyTorch's convention)?",
    _ex8_answer, _ex8_explain, "theory/variants.md", mistakes=_ex8_mistakes,
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


_EXERCISE_9 = Exercise(
    "The loss of a network that knows nothing",
    "Ten classes, all ten logits equal (a network at initialisation). What is the "
    "cross-entropy?",
    _ex9_answer, _ex9_explain, "theory/softmax.md",
)


# 10: the likelihood view --------------------------------------------------- #
_EX10_P = [0.9, 0.6, 0.3]


def _ex10_probs() -> tuple[Any, Any]:
    np = _np()
    p = np.asarray(_EX10_P)
    return np.stack([p, 1 - p], axis=-1), np.zeros(len(p), dtype=np.int64)


def _ex10_answer() -> float:
    probs, target = _ex10_probs()
    return _f(_ce().cross_entropy_from_probs(probs, target, reduction="sum"))


def _ex10_mistakes() -> list[tuple[float, str]]:
    probs, target = _ex10_probs()
    mean = _f(_ce().cross_entropy_from_probs(probs, target))
    return [
        (mean, MEAN_NOT_SUM.format(n=3) + " The likelihood of all three labels is a "
               "product, so its negative log is a sum."),
        (math.prod(_EX10_P), "That is the likelihood itself; the question asks for its "
                             "negative logarithm."),
    ]


def _ex10_explain() -> list[str]:
    probs, target = _ex10_probs()
    rows = _np().asarray(_ce().cross_entropy_from_probs(probs, target, reduction="none"))
    like = math.prod(_EX10_P)
    return [
        "1. The labels are independent given the inputs, so the likelihood is the product "
        f"of the probabilities the model gave them: L = P(t_1|x_1) P(t_2|x_2) P(t_3|x_3) "
        f"= 0.9 * 0.6 * 0.3 = {like:.4f}.",
        "2. The logarithm turns the product into a sum: "
        "-log L = -log 0.9 - log 0.6 - log 0.3.",
        f"3. Each term is one example's cross-entropy with a one-hot target: {_vec(rows)}.",
        f"4. Their sum is {_ex10_answer():.4f} = -log {like:.4f} (reduction='sum'); the "
        f"usual training loss is the mean, {_ex10_answer() / 3:.4f}. Maximising the "
        "likelihood and minimising the cross-entropy are the same problem.",
    ]


_EXERCISE_10 = Exercise(
    "Likelihood is cross-entropy",
    "A classifier sees three inputs and gives their true labels the probabilities 0.9, "
    "0.6 and 0.3. Write the likelihood of the three labels given the inputs and take "
    "its negative logarithm. What is the negative log-likelihood (natural log)?",
    _ex10_answer, _ex10_explain, "theory/foundations.md", kind="derivation",
    mistakes=_ex10_mistakes,
)


# 11: the softmax Jacobian -------------------------------------------------- #
def _ex11_p() -> Any:
    return _np().asarray(_ce().softmax(_EX2_LOGITS))[0]


def _ex11_answer() -> float:
    p = _ex11_p()
    return float(-p[0] * p[1])


def _ex11_mistakes() -> list[tuple[float, str]]:
    p = _ex11_p()
    return [
        (float(p[0] * (1 - p[0])), "That is the diagonal entry dyhat_0/dz_0 = "
         "yhat_0 (1 - yhat_0); off the diagonal the Kronecker delta is 0."),
        (float(p[1] * (1 - p[1])), "That is the diagonal entry dyhat_1/dz_1; the question "
         "asks how yhat_0 moves when z_1 moves."),
    ]


def _ex11_explain() -> list[str]:
    p = _ex11_p()
    return [
        "1. yhat_0 = e^{z_0} / S with S = sum_k e^{z_k}. Only S depends on z_1: "
        "dS/dz_1 = e^{z_1}.",
        "2. Quotient rule: dyhat_0/dz_1 = -e^{z_0} e^{z_1} / S^2 = -yhat_0 yhat_1.",
        "3. In general dyhat_c/dz_k = yhat_c (delta_ck - yhat_k): positive on the diagonal, "
        "negative off it (raising one logit takes probability from every other class).",
        f"4. softmax([1, 2, 0.5]) = {_vec(p)}, so dyhat_0/dz_1 = -{p[0]:.4f} * {p[1]:.4f} "
        f"= {_ex11_answer():.4f}.",
    ]


_EXERCISE_11 = Exercise(
    "The softmax Jacobian",
    "For logits z = [1.0, 2.0, 0.5] and yhat = softmax(z), derive dyhat_c/dz_k. What is "
    "dyhat_0/dz_1 (classes from 0)?",
    _ex11_answer, _ex11_explain, "theory/softmax.md", kind="derivation",
    mistakes=_ex11_mistakes, logs=False,
)


# 12: sigmoid(z) - y ------------------------------------------------------- #
def _sigmoid(z: float) -> float:
    np = _np()
    return float(_np().asarray(_ce().softmax(np.asarray([0.0, z])))[1])


def _ex12_answer() -> float:
    np = _np()
    g = _ce().binary_cross_entropy_with_logits_grad(np.asarray([-1.0]), np.asarray([1.0]),
                                                     reduction="sum")
    return _f(np.asarray(g).reshape(-1)[0])


def _ex12_mistakes() -> list[tuple[float, str]]:
    s = _sigmoid(-1.0)
    return [
        (s * (1 - s), "That is the derivative of the sigmoid alone, sigma'(z); chain it with "
                      "dl/dp = -y/p + (1 - y)/(1 - p) and the two simplify."),
        (s, "That is the prediction p = sigmoid(-1); the gradient subtracts the target y."),
    ]


def _ex12_explain() -> list[str]:
    s = _sigmoid(-1.0)
    return [
        "1. With p = sigmoid(z): log p = z - log(1 + e^z) and log(1 - p) = -log(1 + e^z).",
        "2. So l = -y log p - (1 - y) log(1 - p) = log(1 + e^z) - y z.",
        "3. d/dz log(1 + e^z) = e^z / (1 + e^z) = sigmoid(z), and d/dz (y z) = y.",
        f"4. dl/dz = sigmoid(z) - y = {s:.4f} - 1 = {_ex12_answer():.4f}: prediction minus "
        "target, as for the softmax. Negative, so gradient descent raises z.",
    ]


_EXERCISE_12 = Exercise(
    "The binary gradient sigmoid(z) - y",
    "Binary cross-entropy with p = sigmoid(z): derive dl/dz. What is it at z = -1 "
    "with label y = 1?",
    _ex12_answer, _ex12_explain, "theory/gradient.md", kind="derivation",
    mistakes=_ex12_mistakes, logs=False,
)


# 13: temperature ----------------------------------------------------------- #
_EX13_LOGITS, _EX13_T = [2.0, 1.0, 0.0], 2.0


def _ex13_p0(scale: float) -> float:
    np = _np()
    return float(_np().asarray(_ce().softmax(np.asarray(_EX13_LOGITS) * scale))[0])


def _ex13_answer() -> float:
    return _ex13_p0(1 / _EX13_T)


def _ex13_mistakes() -> list[tuple[float, str]]:
    return [
        (_ex13_p0(_EX13_T), "You multiplied the logits by T; divide them: softmax(z / T). "
                            "A temperature above 1 flattens the distribution."),
        (_ex13_p0(1.0), "That is softmax(z) at T = 1; divide the logits by T = 2 first."),
    ]


def _ex13_explain() -> str:
    np = _np()
    z = np.asarray(_EX13_LOGITS)
    return (
        f"z / T = {_vec(z / _EX13_T)}; softmax of that = "
        f"{_vec(_ce().softmax(z / _EX13_T))}, so class 0 gets {_ex13_answer():.4f}, less "
        f"than the {_ex13_p0(1.0):.4f} it has at T = 1: a higher temperature moves "
        "probability toward the unlikely classes, and the argmax never changes."
    )


_EXERCISE_13 = Exercise(
    "Temperature",
    "Logits z = [2, 1, 0] at temperature T = 2 (softmax(z / T)). What probability "
    "does class 0 get?",
    _ex13_answer, _ex13_explain, "theory/softmax.md", mistakes=_ex13_mistakes, logs=False,
)


# 14: focal loss ------------------------------------------------------------ #
_EX14_P, _EX14_GAMMA = [0.6, 0.3, 0.1], 2.0


def _ex14_answer() -> float:
    np = _np()
    logits = np.log(np.asarray([_EX14_P]))  # softmax(log p) = p
    return _f(_ce().focal_loss(logits, np.asarray([0]), gamma=_EX14_GAMMA, reduction="sum"))


def _ex14_mistakes() -> list[tuple[float, str]]:
    plain = -math.log(_EX14_P[0])
    return [
        (plain, "That is plain cross-entropy; the focal loss multiplies it by (1 - p_t)^gamma."),
        (_EX14_P[0] ** 2 * plain, "The factor is (1 - p_t)^gamma, which is small for the easy "
                                  "examples, not p_t^gamma."),
        ((1 - _EX14_P[0]) * plain, "That is gamma = 1; raise (1 - p_t) to gamma = 2."),
    ]


def _ex14_explain() -> str:
    plain = -math.log(_EX14_P[0])
    return (
        f"FL = -(1 - p_t)^gamma log p_t = -(0.4)^2 log 0.6 = 0.16 * {plain:.4f} = "
        f"{_ex14_answer():.4f} (crossentropy.focal_loss). The factor scales this "
        "half-right example's loss by 0.16; one at p_t = 0.9 would be scaled by 0.01."
    )


_EXERCISE_14 = Exercise(
    "Focal loss",
    "A 3-class model gives the true class the probability 0.6. What is its focal loss "
    "with gamma = 2 (no alpha)?",
    _ex14_answer, _ex14_explain, "theory/variants.md", mistakes=_ex14_mistakes,
)


# 15: CE vs squared error --------------------------------------------------- #
_EX15_Z = -4.0


def _ex15_answer() -> float:
    s = _sigmoid(_EX15_Z)
    return 2 * (s - 1) * s * (1 - s)


def _ex15_mistakes() -> list[tuple[float, str]]:
    s = _sigmoid(_EX15_Z)
    return [
        (s - 1, "That is the cross-entropy's gradient sigmoid(z) - y; the squared error's "
                "carries the sigmoid's slope sigmoid(z) (1 - sigmoid(z)) as a factor."),
        ((s - 1) * s * (1 - s), "Missing the factor 2 of d/dp (p - y)^2 = 2 (p - y)."),
    ]


def _ex15_explain() -> list[str]:
    s = _sigmoid(_EX15_Z)
    ce_grad = s - 1
    return [
        f"1. p = sigmoid(-4) = {s:.4f} (computed as softmax([0, -4])[1]).",
        "2. Chain rule: d/dz (p - y)^2 = 2 (p - y) * dp/dz, with dp/dz = p (1 - p).",
        f"3. 2 * ({s:.4f} - 1) * {s:.4f} * {1 - s:.4f} = {_ex15_answer():.4f}.",
        f"4. Cross-entropy's gradient at the same point is p - y = {ce_grad:.4f}, "
        f"{ce_grad / _ex15_answer():.0f} times larger: squared error barely moves a "
        "confidently wrong sigmoid, cross-entropy pushes it at nearly full strength.",
    ]


_EXERCISE_15 = Exercise(
    "CE vs squared error when confidently wrong",
    "A sigmoid unit outputs p = sigmoid(z) with z = -4, and the label is y = 1. Derive "
    "d/dz of the squared error (p - y)^2. What is it?",
    _ex15_answer, _ex15_explain, "theory/losses-compared.md", kind="derivation",
    mistakes=_ex15_mistakes, logs=False,
)


# 16, 17: bits and perplexity ----------------------------------------------- #
_EX16_NATS = 2.0


def _ex16_answer() -> float:
    return _EX16_NATS / math.log(2)


def _ex16_mistakes() -> list[tuple[float, str]]:
    return [
        (_EX16_NATS * math.log(2), "You multiplied by log 2; a bit is log 2 nats, so "
                                   "bits = nats / log 2."),
        (math.exp(_EX16_NATS), "That is the perplexity, e^2; the question asks for bits."),
        (_EX16_NATS / math.log(10), "That is in decimal digits (base 10), not bits."),
    ]


def _ex16_explain() -> str:
    return (
        f"log2 x = ln x / ln 2, so 2.0 nats = 2.0 / {math.log(2):.4f} = {_ex16_answer():.4f} "
        "bits per token: each token costs as much as about 2.9 fair coin flips."
    )


_EXERCISE_16 = Exercise(
    "Nats to bits",
    "A language model's mean cross-entropy on a test text is 2.0 nats per token. "
    "What is it in bits per token?",
    _ex16_answer, _ex16_explain, "theory/bits-perplexity.md", mistakes=_ex16_mistakes,
    logs=False,
)


def _ex17_answer() -> float:
    return math.exp(_EX16_NATS)


def _ex17_mistakes() -> list[tuple[float, str]]:
    return [
        (2.0 ** _EX16_NATS, "You raised 2 to a loss in nats; perplexity is e^(loss in nats), "
                            "or 2^(loss in bits)."),
        (_ex16_answer(), "That is the loss in bits per token; perplexity is its power: 2^bits."),
        (10.0 ** _EX16_NATS, "Perplexity is e^(loss in nats), not 10^loss."),
    ]


def _ex17_explain() -> str:
    return (
        f"Perplexity = e^2.0 = {_ex17_answer():.4f} = 2^{_ex16_answer():.4f}: the model is as "
        "unsure as if it chose uniformly among about 7.4 tokens at each step. A "
        "uniform guess over V tokens has loss log V and perplexity exactly V."
    )


_EXERCISE_17 = Exercise(
    "Perplexity",
    "The same model (2.0 nats per token): what is its perplexity?",
    _ex17_answer, _ex17_explain, "theory/bits-perplexity.md", mistakes=_ex17_mistakes,
    logs=False,
)


# 21: poly-1 (after the coding exercises, so their numbers stay) ------------- #
_EX21_EPS = 1.0


def _ex21_answer() -> float:
    np = _np()
    logits = np.log(np.asarray([_EX14_P]))  # softmax(log p) = p
    return _f(_ce().poly1_cross_entropy(logits, np.asarray([0]), epsilon=_EX21_EPS,
                                        reduction="sum"))


def _ex21_mistakes() -> list[tuple[float, str]]:
    plain = -math.log(_EX14_P[0])
    return [
        (plain, "That is plain cross-entropy; poly-1 adds epsilon * (1 - p_t)."),
        (plain + _EX21_EPS * _EX14_P[0], "The added term is epsilon * (1 - p_t), the first "
                                         "term of -log p_t's series in (1 - p_t), not "
                                         "epsilon * p_t."),
        (plain + 2.0 * (1 - _EX14_P[0]), "That is epsilon = 2, optax's default; the question "
                                         "(and this library's default) has epsilon = 1."),
    ]


def _ex21_explain() -> str:
    plain = -math.log(_EX14_P[0])
    return (
        f"-log p_t = sum_j (1 - p_t)^j / j; poly-1 raises the first coefficient by epsilon: "
        f"L = -log 0.6 + 1 * (1 - 0.6) = {plain:.4f} + 0.4 = {_ex21_answer():.4f} "
        "(crossentropy.poly1_cross_entropy). Positive epsilon pushes harder on examples that "
        "are already mostly right."
    )


_EXERCISE_21 = Exercise(
    "Poly-1",
    "The same 3-class model gives the true class the probability 0.6. What is its "
    "poly-1 loss, -log p_t + epsilon * (1 - p_t), with epsilon = 1?",
    _ex21_answer, _ex21_explain, "theory/variants.md", mistakes=_ex21_mistakes,
)


# 18-20: coding exercises ---------------------------------------------------- #
#: The logits and targets a learner's code is graded on: a random batch, then rows
#: near 1e4 (exp overflows), a row whose max is far from another row's (a shift by
#: the global max underflows), and a true class 1e4 behind (its probability is 0).
_N, _C = 4, 5


def _batch() -> tuple[Any, Any]:
    np = _np()
    rng = np.random.default_rng(17)
    return rng.normal(size=(_N, _C)) * 2.0, np.asarray([0, 3, 3, 1])


def _big_batch() -> tuple[Any, Any]:
    np = _np()
    z = np.asarray([[1e4, 1e4 - 1, 1e4 - 2],
                    [-1e4, -1e4 + 1, -1e4 + 3],
                    [0.0, -1e4, 0.5]])
    return z, np.asarray([2, 0, 1])


def _run(f: Callable[..., Any], *args: Any) -> tuple[Any, Any]:
    """Run the learner's function on copies of ``args``.

    Returns its result as a float array and None, or None and what went wrong.
    """
    np = _np()
    try:
        with np.errstate(all="ignore"):
            result = f(*[a.copy() for a in args])
    except Exception as exc:  # the learner's code may raise anything: report it
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return None, f"raised {type(exc).__name__}: {exc} (line {frame.lineno})"
    try:
        return np.asarray(result, dtype=float), None
    except (TypeError, ValueError) as exc:
        return None, f"returned {type(result).__name__}, not numbers ({exc})"


def _close(a: Any, b: Any, rtol: float = 1e-6, atol: float = 1e-10) -> bool:
    np = _np()
    return a.shape == b.shape and bool(np.all(np.isfinite(a))) and np.allclose(
        a, b, rtol=rtol, atol=atol)


def _where(got: Any, want: Any) -> str:
    np = _np()
    bad = ~np.isclose(got, want, rtol=1e-6, atol=1e-10)
    index = np.unravel_index(int(np.argmax(bad)), got.shape) if got.ndim else ()
    at = f" at {tuple(int(i) for i in index)}" if index else ""
    return f"got {got[index]:.6g}{at}, expected {want[index]:.6g}"


def _diagnose(got: Any, candidates: list[tuple[Any, str]]) -> str:
    """The hint of the first candidate (value, hint) that ``got`` matches."""
    for value, hint in candidates:
        if _close(got, _np().asarray(value, dtype=float)):
            return hint
    return ""


def _first_run(module: Any, name: str, args: tuple[Any, ...],
               shape: tuple[int, ...]) -> tuple[Any, list[Finding]]:
    """Run ``module.<name>`` on the random batch ``args``: its result and the first findings.

    The result is None when the function raised or returned no numbers (the one
    finding says which); else the findings start with the shape check.
    """
    got, problem = _run(getattr(module, name), *args)
    if got is None:
        call = f"{name}({', '.join(('z', 't')[:len(args)])})"
        return None, [Finding("runs", False, f"{call} {problem}")]
    if got.shape == shape:
        return got, [Finding("shape", True, f"{got.shape} for logits of shape ({_N}, {_C})")]
    hint = ""
    if shape == () and got.shape == (_N,):
        hint = "You return one loss per row; the exercise asks for their mean, one number."
    return got, [Finding("shape", False, f"{name} returned shape {got.shape}, expected {shape}",
                         hint)]


def _stability_check(f: Callable[..., Any], reference: Any, args: Any, logs: bool = True,
                     scalar: bool = False) -> Finding:
    """Run ``f`` on logits near 1e4 (``args``) and compare with the library's ``reference``.

    ``scalar``: only the first number counts (a loss).
    """
    np = _np()
    label = "stability at logits near 1e4"
    got, problem = _run(f, *args)
    if got is None:
        return Finding(label, False, problem)
    if scalar and got.size:
        got = got.reshape(-1)[:1].reshape(())
    want = np.asarray(reference(*args))
    if got.shape != want.shape:
        return Finding(label, False, f"returned shape {got.shape} for logits of shape "
                                     f"{args[0].shape}, expected {want.shape}")
    if _close(got, want):
        return Finding(label, True, "finite and right")
    if not np.all(np.isfinite(got)):
        rows = sorted({int(i) for i in np.argwhere(~np.isfinite(got.reshape(got.shape[0], -1))
                                                   if got.ndim else [[0]])[:, 0]})
        hint = ("exp(1e4) overflows to inf (inf / inf is nan), and a row of logits near "
                "-1e4 underflows to 0 (0 / 0 is nan). Subtract each row's own maximum "
                "before exp, m = z.max(axis=-1, keepdims=True), and exponentiate z - m.")
        if logs:
            hint += (" And never take log(softmax(z)): exp(-1e4) underflows to 0 and log 0 "
                     "is -inf; use (m - z_t) + log(sum(exp(z - m))).")
        if got.ndim == 2 and 0 not in rows:
            hint = ("Row 0 is fine, the others are not: you subtracted one maximum for the "
                    "whole array. Each row needs its own: z.max(axis=-1, keepdims=True).")
        where = f" (rows {rows})" if got.ndim else f" ({float(got):g})"
        return Finding(label, False, f"non-finite values{where}", hint)
    return Finding(label, False, _where(got, want))


def _grade_softmax(module: Any) -> list[Finding]:
    np = _np()
    ce = _ce()
    z, _ = _batch()
    got, findings = _first_run(module, "softmax", (z,), z.shape)
    if got is None:
        return findings
    want = np.asarray(ce.softmax(z))
    if got.shape == z.shape:
        if _close(got, want):
            findings.append(Finding("values", True, "match crossentropy.softmax"))
        else:
            e = np.exp(z)
            hint = _diagnose(got, [
                (ce.softmax(z, axis=0), "You normalised down the columns (axis 0). Each row "
                 "is one example: divide by the row's sum, axis=-1 with keepdims=True."),
                (e / e.sum(), "You divided by the sum of the whole array; each row by its own "
                 "sum (axis=-1, keepdims=True)."),
                (ce.softmax(-z), "Sign: softmax uses exp(z), not exp(-z)."),
            ])
            if not hint and not np.allclose(got.sum(axis=-1), 1.0):
                hint = "Not normalised: each row must sum to 1; divide it by its own sum."
            findings.append(Finding("values", False, _where(got, want), hint))
    zb, _ = _big_batch()
    findings.append(_stability_check(module.softmax, ce.softmax, (zb,), logs=False))
    return findings


def _grade_cross_entropy(module: Any) -> list[Finding]:
    np = _np()
    ce = _ce()
    f = module.cross_entropy
    z, t = _batch()
    got, findings = _first_run(module, "cross_entropy", (z, t), ())
    if got is None:
        return findings
    want = np.asarray(ce.cross_entropy(z, t))
    got = got.reshape(()) if got.size == 1 else got
    if got.shape == ():
        if _close(got, want):
            findings.append(Finding("values", True, "match crossentropy.cross_entropy"))
        else:
            hint = _diagnose(got, [
                (want * _N, SUM_NOT_MEAN.format(n=_N)),
                (-want, "Sign: the loss is -log softmax(z)_t, which is positive."),
                (want / math.log(2), "That is in bits (log base 2); use the natural log, np.log."),
                (want / math.log(10), "That is in base 10; use the natural log, np.log."),
                (ce.cross_entropy(z, (t + 1) % _C), "You picked the class after the true one. "
                 "The targets count from 0: index row n with t[n] directly."),
                (ce.cross_entropy(z, (t - 1) % _C), "You picked the class before the true one. "
                 "The targets count from 0: index row n with t[n] directly."),
                (ce.logsumexp(z).mean(), "That is the mean log-sum-exp: subtract the true "
                 "class's logit, z[n, t[n]]."),
            ])
            findings.append(Finding("values", False, _where(got, want), hint))
    findings.append(_stability_check(f, ce.cross_entropy, _big_batch(), scalar=True))
    # float32: lse(z) - z_t loses the digits of a loss near 1 next to logits near 1e4.
    z32 = np.asarray([[1e4, 1e4 - 1, 1e4 - 2]], dtype=np.float32)
    got32, problem = _run(f, z32, np.asarray([2]))
    exact = float(np.asarray(ce.cross_entropy(z32.astype(np.float64), np.asarray([2]))))
    label = "float32 precision at logits near 1e4"
    if got32 is None or got32.size != 1:
        findings.append(Finding(label, False, problem or f"returned shape {got32.shape}"))
    else:
        rel = abs(float(got32.reshape(-1)[0]) - exact) / exact
        ok = rel < 1e-5
        hint = "" if ok or not math.isfinite(rel) else (
            "You computed lse(z) - z_t: lse is near 1e4, where float32's numbers are about "
            "0.001 apart, and the loss is near 2. Subtract first: (m - z_t) + "
            "log(sum(exp(z - m))), where m - z_t is exact.")
        detail = (f"relative error {rel:.1e} (at most 1e-05)" if math.isfinite(rel)
                  else f"non-finite ({float(got32.reshape(-1)[0]):g}): see the check above")
        findings.append(Finding(label, ok, detail, hint))
    return findings


def _grade_gradient(module: Any) -> list[Finding]:
    np = _np()
    ce = _ce()
    z, t = _batch()
    got, findings = _first_run(module, "cross_entropy_grad", (z, t), z.shape)
    if got is None:
        return findings
    want = np.asarray(ce.cross_entropy_grad(z, t))
    if got.shape == z.shape:
        if _close(got, want):
            findings.append(Finding("values", True, "match crossentropy.cross_entropy_grad"))
        else:
            p, onehot = np.asarray(ce.softmax(z)), np.eye(_C)[t]
            hint = _diagnose(got, [
                (want * _N, "That is the gradient of the sum; the mean's is "
                 f"(softmax(z) - onehot(t)) / N, N = {_N}."),
                (-want, "Sign: the gradient is yhat - y (prediction minus target), not y - yhat."),
                (p / _N, "You forgot to subtract the one-hot target: "
                 "(softmax(z) - onehot(t)) / N."),
                (p, "You forgot to subtract the one-hot target and to divide by N."),
                ((p - np.eye(_C)[(t + 1) % _C]) / _N, "Off by one class: the targets count "
                 "from 0; onehot = np.eye(C)[t]."),
                ((p - np.eye(_C)[(t - 1) % _C]) / _N, "Off by one class: the targets count "
                 "from 0; onehot = np.eye(C)[t]."),
                ((p - onehot) / _C, f"You divided by the number of classes, {_C}; divide by "
                 f"the number of rows, {_N}."),
            ])
            findings.append(Finding("values", False, _where(got, want), hint))
        # An independent check: central differences of the library's loss.
        h = 1e-6
        numeric = np.zeros_like(z)
        for i in np.ndindex(z.shape):
            step = np.zeros_like(z)
            step[i] = h
            numeric[i] = (float(np.asarray(ce.cross_entropy(z + step, t)))
                          - float(np.asarray(ce.cross_entropy(z - step, t)))) / (2 * h)
        ok = _close(got, numeric, rtol=1e-5, atol=1e-8)
        findings.append(Finding(
            "finite differences", ok,
            f"largest difference {float(np.max(np.abs(got - numeric))):.1e} from "
            "(J(z + h e_i) - J(z - h e_i)) / 2h, h = 1e-6",
            "" if ok else "Your gradient is not the derivative of the mean loss: change one "
                          "logit by h and see how much the loss moves."))
    findings.append(_stability_check(module.cross_entropy_grad, ce.cross_entropy_grad,
                                     _big_batch(), logs=False))
    return findings


def _coding_question(signature: str, what: str) -> str:
    return (
        f"In a file (say mine.py), write {signature} with NumPy: z is a float array of "
        f"logits, shape (N, C), t an integer array of N classes (from 0). {what} Then run "
        "`crossentropy exercises check N --file mine.py`: your code is graded against the "
        "library on random logits, on logits near 1e4, and (for the gradient) by finite "
        "differences."
    )


def _ex18_explain() -> list[str]:
    return [
        "softmax(z)_c = exp(z_c) / sum_k exp(z_k), row by row. Subtract each row's maximum "
        "first: m = z.max(axis=-1, keepdims=True); e = np.exp(z - m); "
        "return e / e.sum(axis=-1, keepdims=True). The shift changes nothing in exact "
        "arithmetic and keeps every exponent <= 0, so nothing overflows and the largest "
        "term is exactly 1.",
    ]


_EXERCISE_18 = Exercise(
    "Code softmax",
    _coding_question("softmax(z)", "Return the softmax of each row, shape (N, C)."),
    None, _ex18_explain, "theory/softmax.md", kind="coding", grade=_grade_softmax,
)


def _ex19_explain() -> list[str]:
    return [
        "Never take log(softmax(z)): a probability that underflows to 0 gives log 0 = -inf. "
        "With m the row maximum, the loss of row n is (m - z[n, t[n]]) + "
        "log(sum(exp(z[n] - m))): m - z_t is exact, the sum lies in [1, C]. Return the "
        "mean over the rows.",
    ]


_EXERCISE_19 = Exercise(
    "Code cross_entropy",
    _coding_question("cross_entropy(z, t)", "Return the mean over the rows of "
                     "-log softmax(z)[n, t[n]], one number."),
    None, _ex19_explain, "theory/stability.md", kind="coding", grade=_grade_cross_entropy,
)


def _ex20_explain() -> list[str]:
    return [
        "d(mean CE)/dz = (softmax(z) - onehot(t)) / N: prediction minus target, divided by "
        "the number of rows because the loss is their mean. Use the stable softmax of "
        "exercise 18 and onehot = np.eye(C)[t].",
    ]


_EXERCISE_20 = Exercise(
    "Code the gradient",
    _coding_question("cross_entropy_grad(z, t)", "Return the gradient of that mean "
                     "loss with respect to z, shape (N, C)."),
    None, _ex20_explain, "theory/gradient.md", kind="coding", grade=_grade_gradient,
)


EXERCISES: tuple[Exercise, ...] = (
    _EXERCISE_1, _EXERCISE_2, _EXERCISE_3, _EXERCISE_4, _EXERCISE_5, _EXERCISE_6,
    _EXERCISE_7, _EXERCISE_8, _EXERCISE_9, _EXERCISE_10, _EXERCISE_11, _EXERCISE_12,
    _EXERCISE_13, _EXERCISE_14, _EXERCISE_15, _EXERCISE_16, _EXERCISE_17, _EXERCISE_18,
    _EXERCISE_19, _EXERCISE_20, _EXERCISE_21,
)

#: The function each coding exercise grades.
CODING_FUNCTIONS = {"Code softmax": "softmax", "Code cross_entropy": "cross_entropy",
                    "Code the gradient": "cross_entropy_grad"}


def is_correct(given: float, expected: float) -> bool:
    """Within ``ABSOLUTE_TOLERANCE`` of the library's value, as the list promises."""
    return math.isclose(given, expected, rel_tol=0.0, abs_tol=ABSOLUTE_TOLERANCE)


def hint_for(ex: Exercise, given: float, expected: float) -> str:
    """The mistake ``given`` matches: the exercise's own pitfalls first, then the generic ones."""
    candidates = list(ex.mistakes())
    if abs(expected) > 2 * ABSOLUTE_TOLERANCE:
        candidates.append((-expected, "Check the sign: your number has the right size and "
                                      "the opposite sign."))
    if ex.logs:
        candidates += [
            (expected / math.log(2), "That is the answer in bits (log base 2); the exercises "
                                     "use natural logarithms (multiply by ln 2 = 0.6931)."),
            (expected / math.log(10), "That is the answer with log base 10; the exercises use "
                                      "natural logarithms (multiply by ln 10 = 2.3026)."),
        ]
    for value, hint in candidates:
        if is_correct(given, value) and not is_correct(value, expected):
            return hint
    return ""


def exercise_number(text: str) -> int:
    """An argparse type: an exercise number from 1 to ``len(EXERCISES)``."""
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
    """The list of exercises, with how to answer them."""
    lines = [
        f"{len(EXERCISES)} exercises. Answer with: crossentropy exercises check N ANSWER,",
        "or for a coding exercise: crossentropy exercises check N --file mine.py",
        "(natural logs; classes count from 0 as in the library; an answer within 0.001 counts).",
        "",
    ]
    for i, ex in enumerate(EXERCISES, start=1):
        tag = "" if ex.kind == "numeric" else f" [{ex.kind}]"
        lines.append(f"{i}. {ex.title}{tag}")
        lines += textwrap.wrap(ex.question, width=88, initial_indent="   ", subsequent_indent="   ")
        lines.append(f"   Taught in {DOCS_URL}{ex.page}")
        lines.append("")
    return "\n".join(lines).rstrip()


def _paragraphs(explain: str | list[str]) -> str:
    parts = [explain] if isinstance(explain, str) else explain
    wrapped = []
    for part in parts:
        indent = "   " if part[:2].rstrip(".").isdigit() else ""
        wrapped.append("\n".join(textwrap.wrap(part, width=88, subsequent_indent=indent)))
    return "\n".join(wrapped)


def check(n: int, given: float) -> tuple[bool, str]:
    """Whether ``given`` answers exercise ``n`` (1-based), and the explanation."""
    ex = EXERCISES[n - 1]
    if ex.answer is None:
        raise ValueError(f"exercise {n} is a coding exercise: grade a file with grade_file")
    expected = ex.answer()
    ok = is_correct(given, expected)
    if ok:
        verdict = f"Correct: {expected:.4f}."
    else:
        verdict = f"Not quite: you gave {given:g}, the answer is {expected:.4f}."
        hint = hint_for(ex, given, expected)
        if hint:
            verdict += "\n" + "\n".join(textwrap.wrap("Hint: " + hint, width=88))
    heading = "Solution, step by step:\n" if ex.kind == "derivation" else ""
    text = (f"Exercise {n}, {ex.title}. {verdict}\n\n{heading}{_paragraphs(ex.explain())}"
            f"\n\nTaught in {DOCS_URL}{ex.page}")
    return ok, text


def load_solution(path: Path) -> Any:
    """Import the learner's file as a module; raise ``RuntimeError`` with what went wrong."""
    spec = importlib.util.spec_from_file_location("learner_solution", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import {path} as Python")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a syntax error or anything the file raises
        raise RuntimeError(
            f"running {path} raised {type(exc).__name__}: {exc}") from None
    return module


def grade_file(n: int, path: Path) -> tuple[bool, str]:
    """Grade the function of coding exercise ``n`` in the file ``path``; return (ok, report)."""
    ex = EXERCISES[n - 1]
    if ex.grade is None:
        raise ValueError(f"exercise {n} takes a numeric answer, not a file")
    name = CODING_FUNCTIONS[ex.title]
    head = f"Exercise {n}, {ex.title}: {name} in {path} against crossentropy.{name}"
    try:
        module = load_solution(path)
    except RuntimeError as exc:
        return False, f"{head}\n\nFAIL  {exc}"
    if not callable(getattr(module, name, None)):
        defined = sorted(k for k, v in vars(module).items()
                         if callable(v) and not k.startswith("_"))
        return False, (f"{head}\n\nFAIL  {path} defines no function named {name!r} "
                       f"(it defines: {', '.join(defined) or 'nothing callable'})")
    findings = ex.grade(module)
    lines = [head, ""]
    for finding in findings:
        lines.append(f"{'ok  ' if finding.ok else 'FAIL'}  {finding.name}: {finding.detail}")
        if finding.hint:
            lines += textwrap.wrap("Hint: " + finding.hint, width=88,
                                   initial_indent="      ", subsequent_indent="      ")
    failed = sum(not f.ok for f in findings)
    ok = failed == 0
    lines.append("")
    if ok:
        lines.append(f"All {len(findings)} checks passed.")
        lines.append("")
        lines.append(_paragraphs(ex.explain()))
    else:
        lines.append(f"{failed} of {len(findings)} checks failed.")
    lines.append(f"\nTaught in {DOCS_URL}{ex.page}")
    return ok, "\n".join(lines)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this subcommand's parser to ``subparsers``."""
    parser = add_command(
        subparsers, "exercises", run,
        help="practice problems; 'exercises check N ANSWER' checks an answer",
        description="List practice problems, or check an answer and explain the right one.",
    )
    actions = parser.add_subparsers(dest="action", metavar="{list,check}")
    actions.add_parser("list", help="list the exercises (the default)")
    check_parser = actions.add_parser(
        "check", help="check an answer",
        description="Check a numeric answer to one exercise, or grade the file of a coding "
                    "exercise with --file.",
    )
    check_parser.add_argument("n", metavar="N", type=exercise_number, help="exercise number")
    check_parser.add_argument("answer", metavar="ANSWER", type=number, nargs="?",
                              help="your numeric answer")
    check_parser.add_argument("--file", type=existing_file, metavar="FILE",
                              help="your Python file, for a coding exercise")
    check_parser._negative_number_matcher = NEGATIVE_VALUE  # "-0.37" and "-1e-3" are answers
    check_parser.set_defaults(_parser=check_parser)


def run(args: argparse.Namespace) -> int:
    """List the exercises or check an answer; the exit status (1: wrong answer)."""
    if args.action == "check":
        ex = EXERCISES[args.n - 1]
        if ex.kind == "coding":
            if args.file is None or args.answer is not None:
                return error(args, f"argument --file: exercise {args.n} is a coding exercise: "
                                   f"check {args.n} --file mine.py")
            ok, text = grade_file(args.n, args.file)
        else:
            if args.answer is None or args.file is not None:
                return error(args, f"argument ANSWER: exercise {args.n} takes a number: "
                                   f"check {args.n} ANSWER")
            ok, text = check(args.n, args.answer)
        print(text)
        return 0 if ok else 1
    print(render_list())
    return 0
