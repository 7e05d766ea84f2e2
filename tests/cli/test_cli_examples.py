"""`crossentropy examples`: the worked-example table, its figures checked independently."""

from __future__ import annotations

import math
import re

import pytest

from crossentropy.cli import main
from crossentropy.cli.examples import COPIED_TABLE_ERRORS, WORKED_EXAMPLES, compute_rows


def loop_cross_entropy(y, p) -> float:
    return -math.fsum(a * math.log(b) for a, b in zip(y, p, strict=True) if a > 0)


def test_worked_examples_figures_match_a_plain_log_loop():
    assert [ex.row for ex in WORKED_EXAMPLES] == list(range(1, 9))
    for ex in WORKED_EXAMPLES:
        assert math.fsum(ex.target) == pytest.approx(1.0)
        assert math.fsum(ex.probs) == pytest.approx(1.0)
        assert round(loop_cross_entropy(ex.target, ex.probs), 4) == ex.loss, ex.row


def test_library_reproduces_every_row_to_4_decimals():
    rows = compute_rows()
    assert len(rows) == 8
    for r in rows:
        ex = r["example"]
        assert round(r["loss"], 4) == ex.loss, ex.row
        assert r["loss"] == pytest.approx(loop_cross_entropy(ex.target, ex.probs), abs=1e-12)
        h = -math.fsum(v * math.log(v) for v in ex.target if v > 0)
        assert r["entropy"] == pytest.approx(h, abs=1e-12)
        assert r["kl"] == pytest.approx(r["loss"] - h, abs=1e-12)


def test_copied_table_is_wrong_exactly_in_rows_5_7_8():
    assert [row for row, _, _ in COPIED_TABLE_ERRORS] == [5, 7, 8]
    assert [copied for _, copied, _ in COPIED_TABLE_ERRORS] == [1.099, 0.891, 0.021]
    for ex in WORKED_EXAMPLES:
        if ex.row not in (5, 7, 8):
            assert abs(ex.copied - loop_cross_entropy(ex.target, ex.probs)) < 5e-4


def test_examples_prints_the_table_the_reasons_and_the_note(capsys):
    assert main(["examples"]) == 0
    out = capsys.readouterr().out
    for ex in WORKED_EXAMPLES:
        line = next(line for line in out.splitlines()
                    if line.split()[:1] == [str(ex.row)] and "[" in line)
        cells = re.split(r"\s{2,}", line.strip())
        assert f"{ex.loss:.4f}" in cells
        assert line.endswith(ex.kind)
    for kind in ("confident-correct", "confident-wrong", "uncertain", "soft target"):
        assert kind in out
    assert "Why each value is large or small" in out
    for row, copied, correct in COPIED_TABLE_ERRORS:
        assert f"row {row}: it prints {copied:.3f}, the library gives {correct:.4f}" in out
    # the reasons are filled in with the library's numbers, no template left over
    assert "{" not in out
    assert "-log 0.8 = 0.2231" in out
