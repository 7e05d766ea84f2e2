"""`crossentropy explain`: every printed number against a float64 loop written here."""

from __future__ import annotations

import json
import math

import pytest

from crossentropy.cli import main


def run_json(capsys, *argv: str) -> dict:
    assert main(["explain", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def softmax_loop(z: list[float]) -> list[float]:
    m = max(z)
    s = math.fsum(math.exp(v - m) for v in z)
    return [math.exp(v - m) / s for v in z]


def xlogy_sum(y: list[float], p: list[float]) -> float:
    return -math.fsum(a * math.log(b) for a, b in zip(y, p, strict=True) if a > 0)


def assert_close(got, expected, tol=1e-12):
    if isinstance(expected, list):
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert g == pytest.approx(e, rel=tol, abs=tol)
    else:
        assert got == pytest.approx(expected, rel=tol, abs=tol)


@pytest.mark.parametrize(
    ("logits", "target"), [([2.0, 1.0, 0.1], 0), ([0.5, -1.0, 3.0, 0.0], 1), ([1000.0, 999.0], 1)]
)
def test_explain_hard_target_steps_match_float64_loop(capsys, logits, target):
    s = run_json(capsys, "--logits", ",".join(map(str, logits)), "--target", str(target))
    m = max(logits)
    lse = m + math.log(math.fsum(math.exp(v - m) for v in logits))
    p = softmax_loop(logits)
    y = [float(c == target) for c in range(len(logits))]
    assert_close(s["max"], m)
    assert_close(s["shifted"], [v - m for v in logits])
    assert_close(s["logsumexp"], lse)
    assert_close(s["max_plus_log_sum"], lse)
    assert_close(s["softmax"], p)
    assert_close(s["log_softmax"], [v - lse for v in logits])
    assert_close(s["loss"], lse - logits[target], tol=1e-10)
    assert_close(s["sum_of_terms"], lse - logits[target], tol=1e-10)
    assert_close(s["gradient"], [a - b for a, b in zip(p, y, strict=True)])
    assert_close(s["entropy"], 0.0)
    assert_close(s["kl"], lse - logits[target], tol=1e-10)
    assert s["identity_error"] < 1e-12
    assert s["target_distribution"] == y


def test_explain_soft_target_decomposes_into_entropy_plus_kl(capsys):
    z, y = [2.0, 1.0, 0.1], [0.7, 0.2, 0.1]
    s = run_json(capsys, "--logits", "2.0,1.0,0.1", "--soft-target", "0.7,0.2,0.1")
    p = softmax_loop(z)
    h = -math.fsum(v * math.log(v) for v in y)
    assert_close(s["loss"], xlogy_sum(y, p))
    assert_close(s["terms"], [-a * math.log(b) for a, b in zip(y, p, strict=True)])
    assert_close(s["gradient"], [a - b for a, b in zip(p, y, strict=True)])
    assert_close(s["entropy"], h)
    assert_close(s["kl"], xlogy_sum(y, p) - h)
    assert_close(s["h_plus_kl"], s["loss"])


def test_explain_probs_gives_loss_and_gradient_of_log_p(capsys):
    s = run_json(capsys, "--probs", "0.8,0.1,0.1", "--target", "0")
    assert_close(s["loss"], -math.log(0.8))
    assert_close(s["gradient"], [0.8 - 1.0, 0.1, 0.1])
    assert s["terms"][1:] == [0.0, 0.0]


def test_explain_soft_target_with_a_zero_class_has_zero_term(capsys):
    s = run_json(capsys, "--probs", "0.5,0.25,0.25", "--soft-target", "0.5,0.5,0")
    assert s["terms"][2] == 0.0
    assert_close(s["loss"], -0.5 * math.log(0.5) - 0.5 * math.log(0.25))
    assert_close(s["entropy"], math.log(2))


@pytest.mark.parametrize(("z", "y"), [(0.8, 1.0), (-3.0, 1.0), (2.5, 0.0), (0.3, 0.7), (40.0, 0.0)])
def test_explain_binary_logit_matches_stable_formula(capsys, z, y):
    if y in (0.0, 1.0):
        s = run_json(capsys, "--binary", f"--logits={z}", "--target", str(int(y)))
    else:
        s = run_json(capsys, "--binary", f"--logits={z}", "--soft-target", str(y))
    sig = 1.0 / (1.0 + math.exp(-z))
    expected = max(z, 0.0) - z * y + math.log1p(math.exp(-abs(z)))
    assert_close(s["loss"], expected, tol=1e-10)
    assert_close(s["as_two_class_ce"], expected, tol=1e-10)
    assert_close(s["stable_form"], expected, tol=1e-10)
    assert_close(s["p"], sig)
    assert_close(s["gradient"], sig - y)
    assert s["identity_error"] < 1e-9


def test_explain_binary_probability(capsys):
    s = run_json(capsys, "--binary", "--probs", "0.3", "--soft-target", "0.9")
    expected = -(0.9 * math.log(0.3) + 0.1 * math.log(0.7))
    assert_close(s["loss"], expected)
    assert_close(s["gradient"], 0.3 - 0.9)
    assert_close(s["entropy"] + s["kl"], expected)


def test_explain_text_shows_every_step(capsys):
    assert main(["explain", "--logits", "2.0,1.0,0.1", "--target", "0"]) == 0
    out = capsys.readouterr().out
    for step in ("m = max(z) = 2", "z - m = [0, -1, -1.9]", "exp(z - m)", "S = 1.51745",
                 "lse = m + log S = 2.41703", "yhat = exp(z - lse) = [0.659001, 0.242433",
                 "-y_c log yhat_c", "CE = 0.41703", "yhat - y", "[-0.340999, 0.242433",
                 "H(y) = 0", "KL(y || yhat) = 0.41703", "CE = H + KL holds"):
        assert step in out, step


def test_explain_accepts_negative_logits_without_equals(capsys):
    s = run_json(capsys, "--logits", "-1,2", "--target", "0")
    assert_close(s["loss"], 3.0 + math.log1p(math.exp(-3.0)))


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--logits", "2,x", "--target", "0"], "--logits"),
        (["--logits", "2,,1", "--target", "0"], "--logits"),
        (["--logits", "2,nan", "--target", "0"], "--logits"),
        (["--logits", "2,1", "--target", "2"], "--target"),
        (["--logits", "2,1", "--target", "-1"], "--target"),
        (["--logits", "2,1", "--target", "one"], "--target"),
        (["--logits", "2,1,0", "--soft-target", "0.5,0.5"], "--soft-target"),
        (["--logits", "2", "--target", "0"], "--logits"),
        (["--binary", "--logits", "1,2", "--target", "1"], "--logits"),
        (["--binary", "--logits", "1", "--target", "2"], "--target"),
        (["--binary", "--logits", "1", "--soft-target", "1.5"], "--soft-target"),
        (["--logits", "2,1", "--probs", "0.5,0.5", "--target", "0"], "--probs"),
        (["--logits", "2,1"], "--target"),
        (["--probs", "0.5,0.6", "--target", "0"], "--probs"),
        (["--probs", "1.5,-0.5", "--target", "0"], "--probs"),
        (["--logits", "2,1,0", "--soft-target", "1.2,-0.1,-0.1"], "--soft-target"),
    ],
)
def test_explain_bad_argument_is_one_line_error_with_status_2(capsys, argv, option):
    with pytest.raises(SystemExit) as exc:
        main(["explain", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert len(error_lines) == 1
    assert option in error_lines[0]


def test_explain_infinite_loss_is_reported_not_nan(capsys):
    s = run_json(capsys, "--binary", "--probs", "0", "--target", "1")
    assert s["loss"] == "inf" and s["kl"] == "inf"
    assert s["identity_error"] == 0.0
    assert s["gradient"] is None
    assert main(["explain", "--probs", "1,0,0", "--target", "1"]) == 0
    out = capsys.readouterr().out
    assert "both are inf" in out
    assert "nan" not in out


def test_explain_underflowed_probability_does_not_claim_the_identity(capsys):
    assert main(["explain", "--logits", "1000,-1000", "--target", "1"]) == 0
    out = capsys.readouterr().out
    assert "CE = 2000" in out
    assert "not checkable" in out


def test_explain_console_error_has_no_traceback():
    import os
    import subprocess
    import sys
    from pathlib import Path

    import crossentropy

    env = dict(os.environ, PYTHONPATH=str(Path(crossentropy.__file__).parents[1]))
    proc = subprocess.run(
        [sys.executable, "-m", "crossentropy.cli", "explain", "--logits", "2,1", "--target", "9"],
        capture_output=True, text=True, env=env, check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "error: argument --target: expected a class index in [0, 1], got 9"
    )


def test_explain_accepts_minus_inf_logits_without_equals(capsys):
    # Regression (issue 15, item 10): "--logits -inf,2" was refused ("expected one argument").
    s = run_json(capsys, "--logits", "-inf,2", "--target", "1")
    assert s["logits"] == ["-inf", 2.0]
    assert s["loss"] == 0.0 and s["softmax"] == [0.0, 1.0]
    assert s["gradient"] == [0.0, 0.0]
    s = run_json(capsys, "--logits", "-1,-Infinity,3", "--target", "2")
    lse = 3.0 + math.log1p(math.exp(-4.0))
    assert_close(s["loss"], lse - 3.0)
    assert s["softmax"][1] == 0.0
    assert main(["explain", "--logits", "-inf,2", "--target", "1"]) == 0
    assert "CE = 0" in capsys.readouterr().out


def test_explain_masked_true_class_has_infinite_loss(capsys):
    s = run_json(capsys, "--logits", "-inf,2", "--target", "0")
    assert s["loss"] == "inf"
    assert s["gradient"] == [-1.0, 1.0]


def test_explain_binary_minus_inf_logit_stable_form_is_not_nan(capsys):
    s = run_json(capsys, "--binary", "--logits", "-inf", "--target", "0")
    assert s["loss"] == 0.0 and s["stable_form"] == 0.0
    s = run_json(capsys, "--binary", "--logits", "-inf", "--target", "1")
    assert s["loss"] == "inf" and s["stable_form"] == "inf"


@pytest.mark.parametrize("logits", ["inf,2", "2,+inf", "nan,1", "-nan,1"])
def test_explain_plus_inf_and_nan_logits_are_usage_errors(capsys, logits):
    with pytest.raises(SystemExit) as exc:
        main(["explain", f"--logits={logits}", "--target", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--logits" in err and "finite numbers or -inf" in err
