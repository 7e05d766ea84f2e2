"""Benchmark: ``linear_cross_entropy`` against the naive ``F.cross_entropy(F.linear(...))``.

Each measurement runs in its own subprocess (``python -m crossentropy._bench_linear
--worker ...``), so that one variant's allocations never pollute another's memory
figures. A worker builds the inputs, runs one tiny warm-up call (library
initialisation), records its resident set size, resets the kernel's high-water
mark (``/proc/self/clear_refs``), runs forward + backward once and reads the new
high-water mark: ``peak_extra`` is the memory above the inputs. Since both
versions must also hand back ``d hidden`` and ``d weight`` (at ``V = 128256``,
``d weight`` is as large as the logits), ``working`` = ``peak_extra`` minus the
bytes of those gradients is reported too. The worker then times ``--runs`` more
forward + backward passes and reports the median time of all its passes (the
first included: the naive version's big blocks go back to the system after
every pass, so every pass pays the same page faults).

Variants run interleaved (naive, linear, naive, linear, ...) ``repeats`` times,
so the time ratio of each round is measured side by side under the same load;
the table shows medians over the rounds. Besides wall time, the process's CPU
time is reported: on a shared machine it is the steadier measure of the work
done (with two threads it also counts OpenMP's spin-waiting).

Standalone: ``python -m crossentropy._bench_linear --shapes 4096x1024x32000``.
From the CLI: ``crossentropy bench --linear`` calls ``run(args)``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

DEFAULT_SHAPES = ((4096, 1024, 32000), (2048, 2048, 128256))
DEFAULT_VARIANTS = ("naive", "linear")
#: variant name -> how the worker computes the loss
VARIANTS = {
    "naive": "F.cross_entropy(F.linear(hidden, weight, bias), target)",
    "linear": "linear_cross_entropy (defaults)",
    "eager": "linear_cross_entropy, gradients computed in forward",
    "recompute": "linear_cross_entropy, logits recomputed in backward",
}
MiB = 2**20


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _worker(variant: str, n: int, d: int, v: int, dtype_name: str, bias: bool,
            chunk_size: int | None, runs: int, threads: int | None) -> dict:
    import torch
    import torch.nn.functional as F

    from crossentropy.torch._linear import _linear_cross_entropy

    if threads:
        torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)

    def loss_fn(h, w, t, b):
        if variant == "naive":
            return F.cross_entropy(F.linear(h, w, b), t)
        mode = "auto" if variant == "linear" else variant
        return _linear_cross_entropy(h, w, t, b, chunk_size=chunk_size, mode=mode)

    def step(h, w, t, b):
        for x in (h, w, b):
            if x is not None:
                x.grad = None
        loss_fn(h, w, t, b).backward()

    # warm-up on tiny inputs: one-time library initialisation is not the variant's cost
    small = [torch.randn(8, 16, dtype=dtype, requires_grad=True),
             torch.randn(32, 16, dtype=dtype, requires_grad=True),
             torch.randint(0, 32, (8,)),
             torch.zeros(32, dtype=dtype, requires_grad=True) if bias else None]
    step(*small)
    del small

    hidden = (torch.randn(n, d, generator=gen) * d**-0.5).to(dtype).requires_grad_()
    weight = torch.randn(v, d, generator=gen).to(dtype).requires_grad_()
    target = torch.randint(0, v, (n,), generator=gen)
    b = torch.zeros(v, dtype=dtype, requires_grad=True) if bias else None
    base_kib = _status_kib("VmRSS")
    exact = _reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    step(hidden, weight, target, b)
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_kib = _status_kib("VmHWM")
    grad_bytes = sum(x.grad.numel() * x.grad.element_size()
                     for x in (hidden, weight, b) if x is not None)
    times, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        step(hidden, weight, target, b)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "variant": variant, "N": n, "D": d, "V": v, "dtype": dtype_name, "bias": bias,
        "peak_extra_mib": (peak_kib - base_kib) / 1024, "grads_mib": grad_bytes / MiB,
        "exact_peak": exact, "first_s": first,
        "time_s": statistics.median([first, *times]),
        "cpu_s": statistics.median([first_cpu, *cpu]),
    }


def _run_worker(variant, shape, dtype, bias, chunk_size, runs, threads) -> dict:
    n, d, v = shape
    cmd = [sys.executable, "-m", "crossentropy._bench_linear", "--worker", variant,
           "--shapes", f"{n}x{d}x{v}", "--dtype", dtype, "--runs", str(runs)]
    if bias:
        cmd.append("--bias")
    if chunk_size:
        cmd += ["--chunk-size", str(chunk_size)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({' '.join(cmd)}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def linear_benchmark(shapes=DEFAULT_SHAPES, *, variants=DEFAULT_VARIANTS, repeats: int = 3,
                     runs: int = 1, dtype: str = "float32", bias: bool = False,
                     chunk_size: int | None = None, threads: int | None = None,
                     baseline: str = "naive", progress=None) -> list[dict]:
    """Measure each variant on each ``(N, D, V)`` shape; one row per shape and variant.

    Every (round, variant) is a fresh subprocess; variants alternate within a
    round. Rows hold medians over the rounds: ``peak_extra_mib`` (RSS high-water
    mark above the inputs), ``working_mib`` (the same minus the gradient
    outputs), ``time_s``, and, relative to ``baseline`` run in the same round,
    ``mem_ratio``, ``working_ratio`` and ``time_ratio`` (median of the per-round
    ratios).
    """
    rows = []
    for shape in shapes:
        rounds = {name: [] for name in variants}
        for r in range(repeats):
            for name in variants:
                res = _run_worker(name, tuple(shape), dtype, bias, chunk_size, runs, threads)
                rounds[name].append(res)
                if progress is not None:
                    progress(f"round {r + 1}/{repeats} {name} N,D,V={shape}: "
                             f"{res['time_s']:.2f} s, {res['peak_extra_mib']:.0f} MiB")
        base = rounds.get(baseline)
        for name in variants:
            res = rounds[name]
            row = {
                "N": shape[0], "D": shape[1], "V": shape[2], "dtype": dtype,
                "variant": name, "rounds": len(res),
                "peak_extra_mib": statistics.median(x["peak_extra_mib"] for x in res),
                "grads_mib": res[0]["grads_mib"],
                "working_mib": statistics.median(x["peak_extra_mib"] - x["grads_mib"]
                                                 for x in res),
                "time_s": statistics.median(x["time_s"] for x in res),
                "cpu_s": statistics.median(x["cpu_s"] for x in res),
                "times_s": [round(x["time_s"], 3) for x in res],
            }
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
            rows.append(row)
    return rows


def print_table(rows, file=None) -> None:
    """A Markdown table of ``linear_benchmark`` rows."""
    file = file or sys.stdout
    head = ("| N | D | V | variant | peak extra MiB | grads MiB | working MiB | time s "
            "| mem ratio | working ratio | time ratio | CPU-time ratio |")
    print(head, file=file)
    print("|---" * (head.count("|") - 1) + "|", file=file)
    for r in rows:
        ratio = (f"{r['mem_ratio']:.3f} | {r['working_ratio']:.3f} | {r['time_ratio']:.3f} "
                 f"| {r['cpu_ratio']:.3f}" if "time_ratio" in r else "- | - | - | -")
        print(f"| {r['N']} | {r['D']} | {r['V']} | {r['variant']} | {r['peak_extra_mib']:.0f} "
              f"| {r['grads_mib']:.0f} | {r['working_mib']:.0f} | {r['time_s']:.2f} | {ratio} |",
              file=file)


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        n, d, v = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape: expected NxDxV, got {text!r}") from None
    return n, d, v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this benchmark (shared by the standalone and the CLI entry)."""
    parser.add_argument("--shapes", nargs="+", type=_parse_shape,
                        default=list(DEFAULT_SHAPES), metavar="NxDxV")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (subprocesses each)")
    parser.add_argument("--runs", type=int, default=1,
                        help="passes per subprocess after the first (all are timed)")
    parser.add_argument("--dtype", default="float32",
                        choices=["float32", "float64", "bfloat16", "float16"])
    parser.add_argument("--bias", action="store_true")
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines too")


def run(args: argparse.Namespace) -> int:
    """Entry point for ``crossentropy bench --linear`` and ``python -m``."""
    shapes = getattr(args, "shapes", None) or list(DEFAULT_SHAPES)
    variants = tuple(getattr(args, "variants", ",".join(DEFAULT_VARIANTS)).split(","))
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: expected names from {list(VARIANTS)}, got {unknown}")
    rows = linear_benchmark(
        shapes, variants=variants, repeats=getattr(args, "repeats", 3),
        runs=getattr(args, "runs", 1), dtype=getattr(args, "dtype", "float32"),
        bias=getattr(args, "bias", False), chunk_size=getattr(args, "chunk_size", None),
        threads=getattr(args, "threads", None),
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    print_table(rows)
    if getattr(args, "json", False):
        for r in rows:
            print(json.dumps(r))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossentropy._bench_linear",
                                     description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        (n, d, v), = args.shapes
        print(json.dumps(_worker(args.worker, n, d, v, args.dtype, args.bias, args.chunk_size,
                                 args.runs, args.threads)))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
