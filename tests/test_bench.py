"""``crossentropy bench --quick --json``: it runs and writes well-formed results.

Only the structure is checked, never a timing (the machine is shared)."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("numba")

from crossentropy.cli import main  # noqa: E402


def test_bench_quick_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    status = main(["bench", "--quick", "--rounds", "2", "--shapes", "256x10,32x2000",
                   "--peers", "numpy,scipy", "--json", str(path)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "copy floor" in printed and "read floor" in printed and "numpy" in printed
    data = json.loads(path.read_text())
    assert set(data) >= {"command", "settings", "runtime", "first_call_s", "results"}
    assert data["settings"]["shapes"] == [[256, 10], [32, 2000]]
    assert data["settings"]["memory"] in ("rss-hwm", "tracemalloc")
    assert data["runtime"]["numpy"] and "numba" in data["runtime"]
    assert data["first_call_s"] > 0
    results = data["results"]
    assert [(r["shape"], r["mode"]) for r in results] == [
        ([256, 10], "fwd_bwd"), ([256, 10], "fwd"), ([32, 2000], "fwd_bwd"), ([32, 2000], "fwd")]
    for r in results:
        assert r["floor"] == ("copy floor" if r["mode"] == "fwd_bwd" else "read floor")
        names = [m["name"] for m in r["methods"]]
        assert {"read floor", "copy floor", "crossentropy fast", "crossentropy generic",
                "numpy naive", "scipy log_softmax"} <= set(names)
        assert ("crossentropy fast, out=" in names) == (r["mode"] == "fwd_bwd")
        assert r["best_peer"] in ("numpy naive", "scipy log_softmax")
        for m in r["methods"]:
            assert m["group"] in ("floor", "ours", "peer")
            assert len(m["times_ms"]) == 2 and all(x > 0 for x in m["times_ms"])
            assert m["ms"] == pytest.approx(sorted(m["times_ms"])[0] / 2
                                            + sorted(m["times_ms"])[1] / 2)
            assert math.isclose(m["x_floor"], m["ms"] / r["floor_ms"])
            assert m["peak_extra_mb"] >= 0 and m["memory"] in ("rss-hwm", "tracemalloc")
        floor = next(m for m in r["methods"] if m["name"] == r["floor"])
        assert floor["x_floor"] == 1.0


def test_bench_rejects_unknown_peers_and_bad_shapes():
    with pytest.raises(SystemExit, match="--peers"):
        main(["bench", "--quick", "--peers", "tensorflowx"])
    with pytest.raises(SystemExit, match="--shapes"):
        main(["bench", "--shapes", "10by10"])


def test_bench_memory_runs_both_variants_in_subprocesses(capsys):
    from crossentropy.cli import main

    assert main(["bench", "--memory", "--shapes", "64x100"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "crossentropy" in out and "extra peak MiB" in out
