"""``crossentropy bench --linear`` (``crossentropy.cli.bench.linear``): its plumbing.

Each run starts real worker subprocesses on tiny shapes; only the structure of
the results is checked, never a timing (the machine is shared).
"""

from __future__ import annotations

import argparse
import json

import pytest

pytest.importorskip("torch")

from crossentropy.cli import main  # noqa: E402
from crossentropy.cli.bench import linear  # noqa: E402
from crossentropy.cli.bench.linear import linear_benchmark, parse_shape, print_table  # noqa: E402


def test_linear_benchmark_runs_and_prints_a_table(capsys):
    """The benchmark's subprocess protocol works (tiny shape; no timing is asserted)."""
    rows = linear_benchmark([(64, 16, 500)], variants=("naive", "linear"), repeats=1, runs=0,
                            alternate=2)
    assert [r["variant"] for r in rows] == ["naive", "linear"]
    for r in rows:
        assert r["grads_mib"] == pytest.approx((64 * 16 + 500 * 16) * 4 / 2**20)
        assert r["time_s"] > 0 and r["cpu_s"] > 0 and r["peak_extra_mib"] >= 0
        assert len(r["alt_times_s"]) == 2 and r["alt_time_ratio"] > 0
    assert rows[0]["time_ratio"] == 1.0 and rows[0]["alt_time_ratio"] == 1.0
    print_table(rows)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| 64 | 16 | 500 | naive |")
    assert all(r["rounds"] == 1 for r in rows)


def test_linear_run_writes_json_path(tmp_path, capsys):
    path = tmp_path / "linear.json"
    args = argparse.Namespace(shapes=[(32, 8, 64)], variants="naive,linear", repeats=1,
                              runs=0, alternate=1, json=path)
    assert linear.run(args) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    data = json.loads(path.read_text())
    assert data["command"] == "crossentropy bench --linear"
    assert data["settings"]["shapes"] == [[32, 8, 64]]
    assert data["settings"]["variants"] == ["naive", "linear"]
    assert data["settings"]["repeats"] == 1 and data["settings"]["alternate"] == 1
    assert [r["variant"] for r in data["results"]] == ["naive", "linear"]
    for r in data["results"]:
        assert (r["N"], r["D"], r["V"]) == (32, 8, 64)
        assert r["peak_extra_mib"] >= 0 and len(r["alt_times_s"]) == 1


def test_bench_linear_cli_json_path_reaches_the_file(tmp_path, monkeypatch, capsys):
    # Regression: `crossentropy bench --linear --json PATH` passed only a flag on, so
    # the rows were printed as JSON lines and PATH was never written.
    seen = {}

    def fake_benchmark(shapes, **kw):  # the real one is covered above; here the CLI wiring
        seen.update(kw, shapes=shapes)
        return [{"N": n, "D": d, "V": v, "variant": name, "dtype": kw["dtype"]}
                for n, d, v in shapes for name in kw["variants"]]

    monkeypatch.setattr(linear, "linear_benchmark", fake_benchmark)
    path = tmp_path / "out.json"
    assert main(["bench", "--linear", "--shapes", "16x4x32,8x4x16", "--json", str(path),
                 "--dtype", "float64"]) == 0
    data = json.loads(path.read_text())
    assert data["settings"]["shapes"] == [[16, 4, 32], [8, 4, 16]]
    assert data["settings"]["dtype"] == "float64" and seen["dtype"] == "float64"
    assert [(r["N"], r["variant"]) for r in data["results"]] == [
        (16, "naive"), (16, "linear"), (8, "naive"), (8, "linear")]
    assert "| 16 | 4 | 32 | naive |" in capsys.readouterr().out


def test_bench_linear_bad_shape_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--linear", "--shapes", "16x4"])
    assert exc.value.code == 2
    assert "--shapes" in capsys.readouterr().err


def test_parse_shape():
    assert parse_shape("4096x1024X32000") == (4096, 1024, 32000)
    with pytest.raises(argparse.ArgumentTypeError, match="NxDxV"):
        parse_shape("4096x1024")
