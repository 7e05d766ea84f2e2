"""`crossentropy exercises`: the list, and answers checked against float64 loops."""

from __future__ import annotations

import math

import pytest

from crossentropy.cli import main
from crossentropy.cli.exercises import EXERCISES, check, is_correct


def softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    return [v / sum(e) for v in e]


def lse(z):
    m = max(z)
    return m + math.log(math.fsum(math.exp(v - m) for v in z))


# Independent answers, one per exercise, in the order of EXERCISES.
ORACLES = [
    lambda: -math.log(0.7),
    lambda: softmax([1.0, 2.0, 0.5])[1] - 1.0,
    lambda: -(0.6 * math.log(0.5) + 0.3 * math.log(0.4) + 0.1 * math.log(0.1)),
    lambda: math.log1p(math.exp(-1.5)),
    lambda: lse([1000.0, 999.0, 998.0]) - 998.0,
    lambda: 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.5),
    lambda: -sum(
        y * (z - lse([3.0, 1.0, 0.0]))
        for y, z in zip([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3], [3.0, 1.0, 0.0], strict=True)
    ),
    lambda: (1 * (lse([2.0, 0.0]) - 2.0) + 3 * (lse([0.0, 1.0]) - 1.0)) / 4,
    lambda: math.log(10),
]


def test_exercises_cover_the_required_topics():
    assert len(EXERCISES) >= 8
    titles = " | ".join(ex.title.lower() for ex in EXERCISES)
    for topic in ("by hand", "gradient", "soft labels", "bce vs ce", "1000", "kl",
                  "label smoothing", "class weights"):
        assert topic in titles, topic


@pytest.mark.parametrize("n", range(1, len(ORACLES) + 1))
def test_exercise_answer_matches_independent_oracle(n):
    assert len(ORACLES) == len(EXERCISES)
    assert EXERCISES[n - 1].answer() == pytest.approx(ORACLES[n - 1](), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("n", range(1, len(ORACLES) + 1))
def test_exercise_check_accepts_right_rejects_wrong(n, capsys):
    right = ORACLES[n - 1]()
    assert main(["exercises", "check", str(n), f"{right:.3f}"]) == 0
    out = capsys.readouterr().out
    assert "Correct" in out
    assert f"{right:.4f}" in out
    wrong = right + 0.05
    assert main(["exercises", "check", str(n), f"{wrong:.4f}"]) == 1
    out = capsys.readouterr().out
    assert "Not quite" in out
    assert f"the answer is {right:.4f}" in out


def test_exercise_tolerance_is_about_three_decimals():
    assert is_correct(0.3567 + 0.0009, 0.3567)
    assert not is_correct(0.3567 + 0.002, 0.3567)
    assert is_correct(1000.4076 + 0.9, 1000.4076)  # relative for large answers
    ok, text = check(2, -0.37)
    assert not ok and "softmax(z) - onehot(t)" in text


def test_exercises_lists_every_exercise(capsys):
    assert main(["exercises"]) == 0
    out = capsys.readouterr().out
    for i, ex in enumerate(EXERCISES, start=1):
        assert f"{i}. {ex.title}" in out
    assert main(["exercises", "list"]) == 0
    assert capsys.readouterr().out == out


def test_exercise_check_accepts_negative_answers(capsys):
    assert main(["exercises", "check", "2", "-0.3715"]) == 0


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["check", "0", "1"], "N"),
        (["check", str(len(EXERCISES) + 1), "1"], "N"),
        (["check", "two", "1"], "N"),
        (["check", "1", "abc"], "ANSWER"),
        (["check", "1"], "ANSWER"),
    ],
)
def test_exercises_bad_argument_exits_2(capsys, argv, name):
    with pytest.raises(SystemExit) as exc:
        main(["exercises", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert name in [line for line in err.splitlines() if "error:" in line][0]
