"""Benchmark: ``linear_cross_entropy`` against the naive ``F.cross_entropy(F.linear(...))``.

Each measurement runs in its own subprocess (``python -m crossentropy.cli.bench.linear
--worker ...``), so that one variant's allocations never pollute another's memory
figures. A worker builds the inputs, runs one tiny warm-up call (library
initialisation), then measures forward + backward once with the benchmark's
memory probe (:func:`crossentropy.cli.bench.memory.peak_extra`: on Linux the
resident set's high-water mark, reset before the call): ``peak_extra`` is the
memory above the inputs. Since both
versions must also hand back ``d hidden`` and ``d weight`` (at ``V = 128256``,
``d weight`` is as large as the logits), ``working`` = ``peak_extra`` minus the
bytes of those gradients is reported too. The worker may time ``--runs`` more
passes; it reports the median time of all its passes (the first included: the
naive version's big blocks go back to the system after every pass, so every
pass pays the same page faults). These subprocesses run ``repeats`` rounds,
variants alternating within a round.

Time is best compared side by side: one more subprocess builds the inputs
once and runs ``--alternate`` forward + backward passes of each variant in
turn (naive, linear, naive, linear, ...); each turn's ratio to the naive pass
next to it sees nearly the same machine load, and the table reports their
median. The process's CPU time is compared the same way (on a shared machine
it is the steadier measure of the work done; with two threads it also counts
OpenMP's spin-waiting).

Standalone: ``python -m crossentropy.cli.bench.linear --shapes 4096x1024x32000``.
From the CLI: ``crossentropy bench --linear`` calls ``run(args)``; with
``--json PATH`` both write the rows to ``PATH``.

The README's table came from (about 40 minutes on 2 shared cores)::

    python -m crossentropy.cli.bench.linear --shapes 4096x1024x32000 \
        --variants naive,linear,recompute --repeats 3 --runs 1 --alternate 5
    python -m crossentropy.cli.bench.linear --shapes 2048x2048x128256 \
        --variants naive,linear,linear:512 --repeats 3 --runs 0 --alternate 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

DEFAULT_SHAPES = ((4096, 1024, 32000), (2048, 2048, 128256))
DEFAULT_VARIANTS = ("naive", "linear")
#: variant name -> how the worker computes the loss
VARIANTS = {
    "naive": "F.cross_entropy(F.linear(hidden, weight, bias), target)",
    "linear": "linear_cross_entropy (defaults)",
    "eager": "linear_cross_entropy, gradients computed in forward",
    "recompute": "linear_cross_entropy, logits recomputed in backward",
    "linear-torch-blas": "linear_cross_entropy, a chunk's products by torch's BLAS, not NumPy's",
}
MiB = 2**20


def _setup(n: int, d: Any, v: Any, dtype_name: str, bias: Any, chunk_size: int | None,
           threads: int | None) -> Any:
    """Inputs (after a tiny warm-up call) and a ``step(variant)`` doing forward + backward."""
    import torch
    import torch.nn.functional as F

    from crossentropy.torch import _chunk
    from crossentropy.torch._linear import linear_cross_entropy_with_mode

    if threads:
        torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)

    def step(variant: str, h: Any, w: Any, t: Any, b: Any) -> None:
        for x in (h, w, b):
            if x is not None:
                x.grad = None
        name, _, rows = variant.partition(":")  # "linear:512" = chunk_size 512
        _chunk.CPU_MATMUL = "torch" if name == "linear-torch-blas" else "numpy"
        name = "linear" if name == "linear-torch-blas" else name
        if name == "naive":
            loss = F.cross_entropy(F.linear(h, w, b), t)
        else:
            mode = "auto" if name == "linear" else name
            loss = linear_cross_entropy_with_mode(
                h, w, t, b, chunk_size=int(rows) if rows else chunk_size, mode=mode)
        loss.backward()

    # warm-up on tiny inputs: one-time library initialisation is not the variant's cost
    small = [torch.randn(8, 16, dtype=dtype, requires_grad=True),
             torch.randn(32, 16, dtype=dtype, requires_grad=True),
             torch.randint(0, 32, (8,)),
             torch.zeros(32, dtype=dtype, requires_grad=True) if bias else None]
    for variant in VARIANTS:
        step(variant, *small)
    del small
    hidden = (torch.randn(n, d, generator=gen) * d**-0.5).to(dtype).requires_grad_()
    weight = torch.randn(v, d, generator=gen).to(dtype).requires_grad_()
    target = torch.randint(0, v, (n,), generator=gen)
    b = torch.zeros(v, dtype=dtype, requires_grad=True) if bias else None
    return (hidden, weight, target, b), step


def _timed(step: Any, variant: str, inputs: Any) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    step(variant, *inputs)
    return time.perf_counter() - t0, time.process_time() - c0


def _worker(variant: str, n: int, d: int, v: int, dtype_name: str, bias: bool,
            chunk_size: int | None, runs: int, threads: int | None) -> dict[str, Any]:
    """Memory (and time) of one variant, alone in this process."""
    from crossentropy.cli.bench.memory import peak_extra

    inputs, step = _setup(n, d, v, dtype_name, bias, chunk_size, threads)
    timed: list[tuple[float, float]] = []
    mem = peak_extra(lambda: timed.append(_timed(step, variant, inputs)))
    (first, first_cpu), = timed
    grad_bytes = sum(x.grad.numel() * x.grad.element_size()
                     for x in (inputs[0], inputs[1], inputs[3]) if x is not None)
    more = [_timed(step, variant, inputs) for _ in range(runs)]
    return {
        "variant": variant, "N": n, "D": d, "V": v, "dtype": dtype_name, "bias": bias,
        "peak_extra_mib": mem["bytes"] / MiB, "grads_mib": grad_bytes / MiB,
        "exact_peak": mem["method"] == "rss-hwm", "memory": mem["method"], "first_s": first,
        "time_s": statistics.median([first, *(t for t, _ in more)]),
        "cpu_s": statistics.median([first_cpu, *(c for _, c in more)]),
    }


def _alternating_worker(variants: list[str], n: int, d: int, v: int, dtype_name: str,
                        bias: bool, chunk_size: int | None, passes: int,
                        threads: int | None) -> dict[str, Any]:
    """Times of the variants' passes alternating in one process (A, B, A, B, ...)."""
    inputs, step = _setup(n, d, v, dtype_name, bias, chunk_size, threads)
    out: dict[str, dict[str, list[float]]] = {name: {"time_s": [], "cpu_s": []}
                                              for name in variants}
    for _ in range(passes):
        for name in variants:
            wall, cpu = _timed(step, name, inputs)
            out[name]["time_s"].append(wall)
            out[name]["cpu_s"].append(cpu)
    return out


def _subprocess(args: list[str]) -> dict[str, Any]:
    # This module's own name, also when it runs as ``python -m`` (``__name__`` is ``__main__``)
    cmd = [sys.executable, "-m", "crossentropy.cli.bench.linear", *args]
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[3])  # the directory holding crossentropy/
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({' '.join(cmd)}):\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _common_args(shape: Any, dtype: Any, bias: Any, chunk_size: int | None,
                 threads: int | None) -> list[str]:
    n, d, v = shape
    args = ["--shapes", f"{n}x{d}x{v}", "--dtype", dtype]
    if bias:
        args.append("--bias")
    if chunk_size:
        args += ["--chunk-size", str(chunk_size)]
    if threads:
        args += ["--threads", str(threads)]
    return args


def _memory_row(res: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "peak_extra_mib": statistics.median(x["peak_extra_mib"] for x in res),
        "grads_mib": res[0]["grads_mib"],
        "working_mib": statistics.median(x["peak_extra_mib"] - x["grads_mib"] for x in res),
        "time_s": statistics.median(x["time_s"] for x in res),
        "cpu_s": statistics.median(x["cpu_s"] for x in res),
        "times_s": [round(x["time_s"], 3) for x in res],
    }


def linear_benchmark(shapes: Sequence[tuple[int, int, int]] = DEFAULT_SHAPES, *,
                     variants: Sequence[str] = DEFAULT_VARIANTS, repeats: int = 3,
                     runs: int = 0, alternate: int = 3, dtype: str = "float32",
                     bias: bool = False, chunk_size: int | None = None,
                     threads: int | None = None, baseline: str = "naive",
                     progress: Callable[[str], Any] | None = None) -> list[dict[str, Any]]:
    """Measure each variant on each ``(N, D, V)`` shape; one row per shape and variant.

    Memory: every (round, variant) is a fresh subprocess (``repeats`` rounds,
    variants alternating within a round), whose first pass gives
    ``peak_extra_mib`` (RSS high-water mark above the inputs) and
    ``working_mib`` (the same minus the gradient outputs); ``time_s`` is the
    median of its ``1 + runs`` passes. Time, side by side: one more subprocess
    runs ``alternate`` passes of each variant in turn (A, B, A, B, ...), so
    that neighbouring passes see the same machine load; ``alt_time_ratio`` and
    ``alt_cpu_ratio`` are the medians of the per-turn ratios to ``baseline``.
    ``mem_ratio``, ``working_ratio``, ``time_ratio`` and ``cpu_ratio`` are
    medians of the per-round ratios of the separate subprocesses.
    """
    rows = []
    res: Any  # a worker's result, then a variant's list of them
    for shape in shapes:
        common = _common_args(tuple(shape), dtype, bias, chunk_size, threads)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for r in range(repeats):
            for name in variants:
                res = _subprocess(["--worker", name, "--runs", str(runs), *common])
                rounds[name].append(res)
                if progress is not None:
                    progress(f"round {r + 1}/{repeats} {name} N,D,V={tuple(shape)}: "
                             f"{res['time_s']:.2f} s, {res['peak_extra_mib']:.0f} MiB")
        alt = None
        if alternate > 0:
            alt = _subprocess(["--worker", ",".join(variants), "--alternate", str(alternate),
                               *common])
            if progress is not None:
                progress(f"alternating passes N,D,V={tuple(shape)}: " + ", ".join(
                    f"{k} {[round(t, 2) for t in x['time_s']]}" for k, x in alt.items()))
        base = rounds.get(baseline) if repeats > 0 else None
        for name in variants:
            res = rounds[name]
            row = {"N": shape[0], "D": shape[1], "V": shape[2], "dtype": dtype,
                   "variant": name, "rounds": len(res)}
            if res:
                row.update(_memory_row(res))
            if base is not None:
                pairs = list(zip(res, base, strict=True))
                row["mem_ratio"] = statistics.median(
                    x["peak_extra_mib"] / y["peak_extra_mib"] for x, y in pairs)
                row["working_ratio"] = statistics.median(
                    (x["peak_extra_mib"] - x["grads_mib"]) / (y["peak_extra_mib"] - y["grads_mib"])
                    for x, y in pairs)
                row["time_ratio"] = statistics.median(
                    x["time_s"] / y["time_s"] for x, y in pairs)
                row["cpu_ratio"] = statistics.median(x["cpu_s"] / y["cpu_s"] for x, y in pairs)
            if alt is not None:
                row["alt_times_s"] = [round(t, 3) for t in alt[name]["time_s"]]
                row["alt_time_s"] = statistics.median(alt[name]["time_s"])
                if baseline in alt:
                    for key in ("time_s", "cpu_s"):
                        turns = zip(alt[name][key], alt[baseline][key], strict=True)
                        row[f"alt_{key[:-2]}_ratio"] = statistics.median(a / b for a, b in turns)
            rows.append(row)
    return rows


def print_table(rows: Any, file: TextIO | None = None) -> None:
    """A Markdown table of ``linear_benchmark`` rows."""
    file = file or sys.stdout
    head = ("| N | D | V | variant | peak extra MiB | grads MiB | working MiB | mem ratio "
            "| working ratio | time s | time ratio | alternating time ratio "
            "| alternating CPU ratio |")
    print(head, file=file)
    print("|---" * (head.count("|") - 1) + "|", file=file)

    def fmt(r: dict[str, Any], key: str, spec: str = ".3f") -> Any:
        return format(r[key], spec) if key in r else "-"

    for r in rows:
        print(f"| {r['N']} | {r['D']} | {r['V']} | {r['variant']} "
              f"| {fmt(r, 'peak_extra_mib', '.0f')} | {fmt(r, 'grads_mib', '.0f')} "
              f"| {fmt(r, 'working_mib', '.0f')} | {fmt(r, 'mem_ratio')} "
              f"| {fmt(r, 'working_ratio')} | {fmt(r, 'time_s', '.2f')} | {fmt(r, 'time_ratio')} "
              f"| {fmt(r, 'alt_time_ratio')} | {fmt(r, 'alt_cpu_ratio')} |", file=file)


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"NxDxV"`` as three integers; ``argparse.ArgumentTypeError`` otherwise."""
    try:
        n, d, v = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape: expected NxDxV, got {text!r}") from None
    return n, d, v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this benchmark (shared by the standalone and the CLI entry)."""
    parser.add_argument("--shapes", nargs="+", type=parse_shape,
                        default=list(DEFAULT_SHAPES), metavar="NxDxV")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, from {', '.join(VARIANTS)}; "
                        "'linear:512' = linear with chunk_size 512")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (subprocesses each)")
    parser.add_argument("--runs", type=int, default=0,
                        help="passes per memory subprocess after the first (all are timed)")
    parser.add_argument("--alternate", type=int, default=3,
                        help="passes per variant in the alternating timing subprocess (0: none)")
    parser.add_argument("--dtype", default="float32",
                        choices=["float32", "float64", "bfloat16", "float16"])
    parser.add_argument("--bias", action="store_true")
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", metavar="PATH", type=Path, default=None,
                        help="also write the settings and rows as JSON here")


def run(args: argparse.Namespace) -> int:
    """Entry point for ``crossentropy bench --linear`` and ``python -m``."""
    shapes = getattr(args, "shapes", None) or list(DEFAULT_SHAPES)
    variants = tuple(getattr(args, "variants", ",".join(DEFAULT_VARIANTS)).split(","))
    unknown = [v for v in variants if v.partition(":")[0] not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: expected names from {list(VARIANTS)}, got {unknown}")
    defaults: dict[str, Any] = {"repeats": 3, "runs": 0, "alternate": 3, "dtype": "float32",
                                "bias": False, "chunk_size": None, "threads": None}
    settings: dict[str, Any] = {key: getattr(args, key, value) for key, value in defaults.items()}
    rows = linear_benchmark(shapes, variants=variants, **settings,
                            progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print_table(rows)
    path = getattr(args, "json", None)
    if path:
        payload = {
            "command": "crossentropy bench --linear",
            "settings": {"shapes": [list(s) for s in shapes], "variants": list(variants),
                         **settings},
            "results": rows,
        }
        with open(path, "w") as f:
            json.dump(payload, f, indent=1)
        print(f"\nwrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point, and the entry point of the worker subprocesses."""
    parser = argparse.ArgumentParser(prog="python -m crossentropy.cli.bench.linear",
                                     description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        (n, d, v), = args.shapes
        if "," in args.worker:
            result = _alternating_worker(args.worker.split(","), n, d, v, args.dtype, args.bias,
                                         args.chunk_size, args.alternate, args.threads)
        else:
            result = _worker(args.worker, n, d, v, args.dtype, args.bias, args.chunk_size,
                             args.runs, args.threads)
        print(json.dumps(result))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
