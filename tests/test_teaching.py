"""The teaching pages say what the library does, and the numbers in their prose are right.

Regression tests for the review of issue 17, and the links between the pages
and the exercises.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import mpmath
import numpy as np
import pytest

from crossentropy.cli.exercises import EXERCISES, check, grade_file

DOCS = Path(__file__).resolve().parents[1] / "docs"
THEORY = sorted(DOCS.glob("theory/*.md"))


def _text(page: str) -> str:
    return " ".join((DOCS / page).read_text().split())


def _python_blocks(page: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (DOCS / page).read_text(), re.M | re.S)


def _exact_loss(z, t) -> float:
    mpmath.mp.dps = 40
    zs = [mpmath.mpf(float(v)) for v in z]
    return float(mpmath.log(mpmath.fsum(mpmath.exp(v) for v in zs)) - zs[t])


def _stability_functions():
    namespace = {"np": np}
    block = next(b for b in _python_blocks("theory/stability.md") if "def stable_loss" in b)
    exec(block.split("z32 =")[0], namespace)  # the two definitions, not the demo
    return namespace["stable_loss"], namespace["lse_then_subtract"]


@pytest.mark.parametrize("t", [0, 1, 2])
@pytest.mark.parametrize("base", [1e4, -1e4, 5e3])
def test_stability_page_formula_keeps_float32_digits_at_1e4(base, t):
    """Regression: the page taught lse(z) - z_t, which in float32 loses 1.6e-4 relative
    at logits near 1e4; what it teaches now keeps float32's precision."""
    stable_loss, _ = _stability_functions()
    z32 = np.asarray([base, base - 1, base - 2], dtype=np.float32)
    exact = _exact_loss(z32, t)
    got = stable_loss(z32, t)
    assert got.dtype == np.float32
    assert abs(float(got) - exact) / exact < 1e-6


def test_stability_page_states_the_float32_loss_it_measures():
    stable_loss, lse_then_subtract = _stability_functions()
    z32 = np.asarray([1e4, 1e4 - 1, 1e4 - 2], dtype=np.float32)
    exact = _exact_loss(z32, 2)
    naive = abs(float(lse_then_subtract(z32, 2)) - exact)
    assert f"{naive / exact:.1e}" == "1.6e-04"
    assert f"{naive:.1e}" == "3.8e-04"
    assert f"{float(np.spacing(np.float32(1e4))):.1e}" == "9.8e-04"
    assert f"{exact:.2f}" == "2.41"
    text = _text("theory/stability.md")
    for claim in ("1.6 \\cdot 10^{-4}", "3.8 \\cdot 10^{-4}", "9.8 \\cdot 10^{-4}",
                  "(m - z_t) + \\log \\sum_{k=1}^{C} e^{z_k - m}"):
        assert claim in text, claim
    assert "a difference of finite numbers" not in text
    assert "(-\\infty) \\cdot 0" in text and "`inf - inf`" not in text


def test_gradient_page_exponential_family_is_expected_minus_observed():
    """Regression: the gradient of the NLL was called "observed minus expected"."""
    text = _text("theory/gradient.md")
    assert "observed minus expected" not in text
    assert "expected minus observed" in text
    assert "ill-conditioned" not in text and "O(C^2)" in text
    assert "(\\hat{\\mathbf Y} - \\mathbf Y)/N" in text  # the mean's batch gradient


def test_foundations_page_credits_gibbs_and_promises_no_calibration():
    text = _text("theory/foundations.md")
    assert "toward calibrated probabilities" not in text
    assert "Gibbs' inequality, not the likelihood" in text
    assert "P_\\theta(t_n \\mid \\mathbf x^{(n)})" in text  # conditioned on the inputs
    assert "lower bound on the average code length" in text
    assert "shortest average code length" not in text


def test_exercise_4_pins_the_first_logit():
    """Regression: the explanation said the second logit of [0, z] is pinned to 0."""
    import crossentropy as ce

    ok, text = check(4, math.log1p(math.exp(-1.5)))
    assert ok and "the first class's logit is pinned to 0" in " ".join(text.split())
    assert np.isclose(ce.cross_entropy(np.array([[0.0, 1.5]]), np.array([1])),
                      ce.binary_cross_entropy_with_logits(np.array([1.5]), np.array([1.0])))


@pytest.mark.parametrize("n", range(1, len(EXERCISES) + 1))
def test_exercise_is_taught_on_a_page_that_links_to_it(n):
    ex = EXERCISES[n - 1]
    page = DOCS / ex.page
    assert page.is_file(), ex.page
    assert "exercises.md" in page.read_text(), f"{ex.page} does not link to the exercises"
    rows = {int(m[1]): m[2] for m in re.finditer(
        r"^\| (\d+) \| [^|]+\| [^|]+\| \[[^\]]*\]\(([^)#]+)", (DOCS / "exercises.md").read_text(),
        re.M)}
    assert rows[n] == ex.page, f"exercises.md lists {n} under {rows[n]}"


def test_exercises_page_transcript_is_what_the_checker_prints(tmp_path, monkeypatch):
    text = (DOCS / "exercises.md").read_text()
    transcript = re.search(r"```text\n\$ crossentropy exercises check 18 --file mine.py\n"
                           r"(.*?)```", text, re.S)[1]
    wrong = re.search(r"Path\(\"mine.py\"\)\.write_text\('''(.*?)'''\)", text, re.S)[1]
    monkeypatch.chdir(tmp_path)
    Path("mine.py").write_text(wrong)
    ok, report = grade_file(18, Path("mine.py"))
    assert not ok
    assert report.strip() == transcript.strip()


def test_cli_page_wrong_answer_transcript_is_what_the_checker_prints():
    text = (DOCS / "guide/cli.md").read_text()
    shown = re.search(r"```text\n\$ crossentropy exercises check 1 1.6094\n(.*?)\.\.\.\n```",
                      text, re.S)[1]
    ok, out = check(1, 1.6094)
    assert not ok and out.startswith(shown.strip())


@pytest.mark.parametrize("page", THEORY + [DOCS / "guide/numpy.md"],
                         ids=lambda p: str(p.relative_to(DOCS)))
def test_teaching_page_has_objectives_and_summary(page):
    text = page.read_text()
    assert '!!! abstract "After this page you can"' in text
    assert '!!! summary "Summary"' in text


def test_numbers_in_the_new_pages_prose():
    assert f"{math.log(10):.4f}" == "2.3026"                      # softmax.md
    assert f"{math.log(50_000):.2f}" == "10.82"                   # bits-perplexity.md
    assert f"{math.log(2):.4f}" == "0.6931"
    p = 1 / (1 + math.exp(4.0))                                   # losses-compared.md
    assert round((1 - p) / (2 * (1 - p) * p * (1 - p))) == 28
    assert "about 28 times harder" in _text("theory/losses-compared.md")
    assert "about 10.82 nats for $V = 50\\,000$" in _text("theory/bits-perplexity.md")
    assert 50_000**2 == 2_500_000_000                            # gradient.md: 2.5 billion
    assert "2.5 billion" in _text("theory/gradient.md")
