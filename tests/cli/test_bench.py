"""``crossentropy bench --quick --json``: it runs and writes well-formed results.

Only the structure is checked, never a timing (the machine is shared)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import crossentropy

pytest.importorskip("numba")

from crossentropy.cli import main  # noqa: E402


def test_bench_quick_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    status = main(["bench", "--quick", "--rounds", "2", "--shapes", "256x10,32x2000",
                   "--peers", "numpy,scipy", "--json", str(path)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "fwd+bwd floor" in printed and "forward floor" in printed and "numpy" in printed
    assert "set by" in printed and ("AVX" in printed or "SSE" in printed or "unknown" in printed)
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
        assert r["floor"] == ("fwd+bwd floor" if r["mode"] == "fwd_bwd" else "forward floor")
        names = [m["name"] for m in r["methods"]]
        memory_pass = "copy" if r["mode"] == "fwd_bwd" else "read"
        assert {r["floor"], f"{memory_pass}: numpy", f"{memory_pass}: numba", "exp: numpy",
                "exp: numba", "crossentropy fast", "crossentropy generic",
                "numpy naive", "scipy log_softmax"} <= set(names)
        # the floor is the slower of the fastest memory pass and the fastest exp pass
        ms = {m["name"]: m["ms"] for m in r["methods"] if "ms" in m}
        fastest = [min((k for k in ms if k.startswith(kind + ": ")), key=ms.get)
                   for kind in (memory_pass, "exp")]
        assert sorted(r["floor_set_by"]) == sorted(fastest)
        assert r["floor_ms"] == max(ms[k] for k in fastest)
        assert ("crossentropy fast, out=" in names) == (r["mode"] == "fwd_bwd")
        assert ("crossentropy fast, out=logits" in names) == (r["mode"] == "fwd_bwd")
        assert r["best_peer"] in ("numpy naive", "scipy log_softmax")
        for m in r["methods"]:
            assert m["group"] in ("floor", "floor pass", "ours", "peer")
            if m["group"] == "floor":
                assert m["ms"] == r["floor_ms"] and m["x_floor"] == 1.0
                continue
            assert len(m["times_ms"]) == 2 and all(x > 0 for x in m["times_ms"])
            assert m["ms"] == pytest.approx(sorted(m["times_ms"])[0] / 2
                                            + sorted(m["times_ms"])[1] / 2)
            assert math.isclose(m["x_floor"], m["ms"] / r["floor_ms"])
            assert m["peak_extra_mb"] >= 0 and m["memory"] in ("rss-hwm", "tracemalloc")
        floor = next(m for m in r["methods"] if m["name"] == r["floor"])
        assert floor["x_floor"] == 1.0


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--peers", "tensorflowx"], "--peers"),
        (["--shapes", "10by10"], "--shapes"),
        (["--shapes", "0x10"], "--shapes"),
        (["--threads", "0"], "--threads"),
        (["--threads", "-2"], "--threads"),
        (["--threads", "two"], "--threads"),
        (["--rounds", "0"], "--rounds"),
        (["--rounds", "-1"], "--rounds"),
        (["--json", "/nonexistent-dir-for-this-test/x.json"], "--json"),
    ],
)
def test_bench_bad_argument_is_a_usage_error_before_any_work(capsys, argv, option):
    # Regression (issue 15, item 10): --threads 0 and --rounds -1 ended in tracebacks,
    # --rounds 0 silently ran 3 rounds, and an unwritable --json path was found only
    # after the whole benchmark had run.
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--quick", *argv])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing measured, nothing printed
    error_lines = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and option in error_lines[0]
    assert "Traceback" not in captured.err


def test_bench_threads_above_numbas_pool_is_a_usage_error(capsys):
    import numba

    too_many = str(numba.config.NUMBA_NUM_THREADS + 1)
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--quick", "--threads", too_many])
    assert exc.value.code == 2
    assert "--threads" in capsys.readouterr().err


def test_bench_json_that_is_a_directory_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--quick", "--json", str(tmp_path)])
    assert exc.value.code == 2
    assert capsys.readouterr().out == ""


def test_bench_without_numba_says_which_extra_and_prints_no_timing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now fails
    assert main(["bench", "--quick"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # in particular no "first call of the fast path" time
    assert captured.err.strip().splitlines() == [
        "crossentropy bench: error: needs numba (not installed): pip install 'crossentropy[fast]'"
    ]


def test_bench_progress_is_off_when_output_is_not_a_terminal(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(crossentropy.__file__).parents[1]))
    proc = subprocess.run(
        [sys.executable, "-m", "crossentropy", "bench", "--quick", "--rounds", "1",
         "--shapes", "64x10", "--peers", "none"],
        capture_output=True, text=True, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\r" not in proc.stdout
    assert "bench:" not in proc.stderr  # no bar at all
    assert "forward only, 64 x 10" in proc.stdout


def test_bench_memory_runs_both_variants_in_subprocesses(capsys):
    from crossentropy.cli import main

    assert main(["bench", "--memory", "--shapes", "64x100"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "crossentropy" in out and "extra peak MiB" in out


def test_frameworks_table_rows_and_gradients_agree_with_the_peers():
    """``bench --frameworks``: one row per framework, our gradient equals the peer's."""
    pytest.importorskip("torch")
    pytest.importorskip("tabulate")
    from crossentropy.cli.bench import frameworks

    rows = frameworks.measure(((64, 7),), rounds=1, frameworks=("numpy", "torch"),
                              progress=lambda _: None)
    assert [r["framework"] for r in rows] == ["numpy", "torch", "torch step"]
    assert all(r["grad_rel"] < 1e-5 and r["ours_ms"] > 0 and r["peer_ms"] > 0 for r in rows)
    assert rows[1]["ours_peak_mib"] >= 0 and rows[1]["peer_peak_mib"] >= 0
    assert "F.cross_entropy" in frameworks.table(rows)


def test_frameworks_rows_of_several_processes_are_their_medians():
    """``--processes 3``: each row the medians of the processes', the spread in the table."""
    pytest.importorskip("tabulate")
    from crossentropy.cli.bench import frameworks

    def row(ours, peer, grad, **extra):
        return {"framework": "jax", "shape": "8x3", "ours_ms": ours, "peer_ms": peer,
                "speedup": peer / ours, "grad_rel": grad, **extra}

    runs = [[row(1.0, 3.0, 1e-8)], [row(4.0, 2.0, 3e-8)], [row(2.0, 2.5, 2e-8)]]
    (r,) = frameworks.combine(runs)
    assert r["ours_ms"] == 2.0 and r["peer_ms"] == 2.5 and r["grad_rel"] == 3e-8
    # the median of the speedups (3, 0.5, 1.25), not 2.5 / 2.0
    assert r["speedup"] == 1.25 and r["speedups"] == [3.0, 0.5, 1.25]
    assert "0.50-3.00" in frameworks.table([r]) and "processes' speedups" in frameworks.table([r])
    assert frameworks.combine(runs[:1]) == runs[0]
    assert "processes' speedups" not in frameworks.table(runs[0])
    with pytest.raises(ValueError):  # processes that disagree on the rows
        frameworks.combine([runs[0], []])


def test_bench_frameworks_processes_option_reaches_measure(monkeypatch, capsys):
    pytest.importorskip("tabulate")
    from crossentropy.cli.bench import frameworks

    seen = {}

    def fake(shapes, rounds, threads=None, processes=1):
        seen.update(shapes=shapes, rounds=rounds, processes=processes)
        return []

    monkeypatch.setattr(frameworks, "measure", fake)
    assert main(["bench", "--frameworks", "--shapes", "64x7", "--rounds", "2",
                 "--processes", "3"]) == 0
    assert seen == {"shapes": ((64, 7),), "rounds": 2, "processes": 3}
    assert "each row the median of 3 processes" in capsys.readouterr().out


def test_frameworks_jax_rows_alone_and_in_a_training_step():
    """``jax`` and ``jax step`` rows: our gradient equals optax's, alone and through ``h @ W``."""
    pytest.importorskip("optax")
    pytest.importorskip("tabulate")
    from crossentropy.cli.bench import frameworks

    rows = frameworks.jax_rows(64, 7, rounds=1)
    assert [r["framework"] for r in rows] == ["jax", "jax step"]
    assert all(r["grad_rel"] < 1e-5 and r["ours_ms"] > 0 and r["peer_ms"] > 0 for r in rows)
    assert "h@W + optax" in frameworks.table(rows)


def test_interleaved_runs_each_method_once_per_round_in_changing_orders():
    from crossentropy.cli.bench import interleaved

    calls = []
    methods = {name: (lambda name=name: calls.append(name)) for name in "abcdef"}
    ticks = []
    times = interleaved(methods, 6, tick=lambda: ticks.append(1))
    rounds = [calls[i : i + 6] for i in range(0, 36, 6)]
    assert all(sorted(r) == list("abcdef") for r in rounds)
    assert len(ticks) == 6 and all(len(v) == 6 for v in times.values())
    assert rounds[0] == list("abcdef")
    # no method always has the same predecessor
    before = {n: {r[r.index(n) - 1] if r.index(n) else None for r in rounds} for n in "abcdef"}
    assert all(len(v) > 1 for v in before.values())
    calls.clear()
    interleaved(methods, 6)
    assert [calls[i : i + 6] for i in range(0, 36, 6)] == rounds  # seeded: the same orders


def test_frameworks_alternate_warms_up_then_times_shuffled_rounds():
    from crossentropy.cli.bench import frameworks

    calls = []
    ms = frameworks._alternate(lambda: calls.append("o"), lambda: calls.append("p"), 8)
    assert calls[:2] == ["o", "p"]  # the warm-up
    rounds = [calls[i : i + 2] for i in range(2, len(calls), 2)]
    assert len(rounds) == 8 and all(sorted(r) == ["o", "p"] for r in rounds)
    assert {tuple(r) for r in rounds} == {("o", "p"), ("p", "o")}  # ours not always first
    assert len(ms) == 2 and all(0 <= v < 1e3 for v in ms)  # milliseconds
