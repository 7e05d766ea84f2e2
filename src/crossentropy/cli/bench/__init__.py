"""``crossentropy bench``: this library against its peers and the memory floors.

Softmax cross-entropy with float32 logits, int64 class indices and the mean
reduction, forward + backward (loss and dL/dlogits) and forward alone. Every
method runs in this one process, in interleaved rounds (each method once per
round, each round in a new shuffled order), and the table shows the median.
The floors are what no method can beat (``crossentropy.cli.bench.floors``):
forward + backward must read the logits, compute an ``exp`` per element and
write a gradient, so its floor is the larger of the fastest copy and the
fastest ``exp`` pass over the logits; the forward's is the larger of the
fastest read and that ``exp`` pass. Each pass is the fastest of NumPy,
PyTorch and a numba ``prange`` loop, and the table says which set the floor.

Peak extra memory is the growth of the resident set during one call (Linux:
the high-water mark ``VmHWM`` reset through ``/proc/self/clear_refs``), which
sees every library's allocations; where that is not available, NumPy's
allocations through ``tracemalloc``. The table says which. (One probe,
``crossentropy.cli.bench.memory``, serves this table and ``--memory``.)

A progress bar runs on stderr when the output is a terminal. Needs the
``fast`` and ``cli`` extras (numba, tabulate, threadpoolctl, tqdm).

Threads: the fast path uses numba's threads (``NUMBA_NUM_THREADS``,
``--threads``); PyTorch and JAX use their own pools, NumPy one thread.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from crossentropy.cli import _extras
from crossentropy.cli._args import add_command, error, positive_int
from crossentropy.cli.bench.floors import FLOOR_NAMES, combine
from crossentropy.cli.bench.floors import passes as floor_passes
from crossentropy.cli.bench.memory import describe, peak_extra
from crossentropy.cli.bench.memory import method as memory_method

FULL_SHAPES = ((65536, 10), (8192, 1000), (4096, 32000), (2048, 128256))
QUICK_SHAPES = ((4096, 10), (512, 1000), (64, 32000))
PEERS = ("numpy", "scipy", "torch", "torch.compile", "jax")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this subcommand's parser to ``subparsers``."""
    parser = add_command(
        subparsers, "bench", run,
        help="time the fast path against NumPy, SciPy, PyTorch, JAX and the memory floors",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="small shapes and 3 rounds: finishes in seconds")
    parser.add_argument("--json", metavar="PATH", type=Path,
                        help="also write the results as JSON here")
    parser.add_argument("--rounds", type=positive_int, default=None,
                        help="interleaved rounds per method, >= 1 (default 7, --quick 3)")
    parser.add_argument("--shapes", default=None,
                        help="comma-separated NxC list (default: "
                        + ",".join(f"{n}x{c}" for n, c in FULL_SHAPES) + ")")
    parser.add_argument("--peers", default=None,
                        help="comma-separated subset of " + ",".join(PEERS)
                        + ", or 'all' (those installed) or 'none'; default all, and with "
                        "--quick all but torch.compile (its compilation takes a minute)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="numba threads for the fast path, >= 1 (default: numba's setting)")
    parser.add_argument("--linear", action="store_true",
                        help="instead: linear_cross_entropy vs hidden @ weight.T + "
                        "F.cross_entropy, memory and time (--shapes as NxDxV; slow)")
    parser.add_argument("--memory", action="store_true",
                        help="instead: peak memory of torch fwd+bwd, crossentropy vs "
                        "F.cross_entropy, each in its own process (default 8192x32000)")
    parser.add_argument("--warmup", action="store_true",
                        help="instead: compile (and cache) the fast-path kernels ahead of "
                        "time, e.g. in an install step; needs only the fast extra")
    parser.add_argument("--frameworks", action="store_true",
                        help="instead: the torch, JAX and TensorFlow drop-ins against "
                        "F.cross_entropy, optax and tf.nn, fwd+bwd, with torch's peak memory "
                        "(default 65536x10,8192x1000,4096x32000)")
    parser.add_argument("--processes", type=positive_int, default=1,
                        help="with --frameworks: run each framework in this many processes "
                        "in turn, each row the median of theirs (default 1)")


# ---------------------------------------------------------------- measuring


def interleaved(methods: dict[str, Any], rounds: int,
                tick: Callable[[], None] | None = None, seed: int = 0) -> dict[str, Any]:
    """Seconds of each callable, timed in interleaved rounds.

    Each round runs every method once, in an order shuffled anew (seeded:
    the same orders every run), so that no method always follows the same
    one. What ran just before a call changes its time: the caches it left,
    and whether the thread pools were busy or asleep (a fused pass took
    5.0 ms right after another pass and 8-10 ms after 100 ms of idleness,
    docs/performance.md). ``tick()`` is called after every round (a progress
    bar's update).
    """
    order = list(methods)
    shuffle = random.Random(seed).shuffle
    times: dict[str, Any] = {name: [] for name in methods}
    for _ in range(rounds):
        for name in order:
            fn = methods[name]
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        shuffle(order)
        if tick is not None:
            tick()
    return times


# ---------------------------------------------------------------- the methods


def _ours(np: ModuleType, z: Any, t: Any, dtype: Any) -> Any:
    import crossentropy as ce
    from crossentropy import _kernels as K

    buf = np.empty_like(z)
    own = z.copy()  # overwritten by its gradient at each call: the others keep z

    def fb_out() -> None:
        ce.cross_entropy_with_grad(z, t, out=buf)

    def fb_in_place() -> None:
        # out=logits: from the second call on, the logits are the last gradient
        # (finite, the same work for every kernel stage)
        ce.cross_entropy_with_grad(own, t, out=own)

    def fb_alloc() -> None:
        ce.cross_entropy_with_grad(z, t)

    def fwd() -> None:
        ce.cross_entropy(z, t)

    def fb_generic() -> None:
        with K.disabled():
            ce.cross_entropy_with_grad(z, t)

    def fwd_generic() -> None:
        with K.disabled():
            ce.cross_entropy(z, t)

    return {
        "crossentropy fast, out=": (fb_out, None),
        "crossentropy fast, out=logits": (fb_in_place, None),
        "crossentropy fast": (fb_alloc, fwd),
        "crossentropy generic": (fb_generic, fwd_generic),
    }


def _numpy_naive(np: ModuleType, z: Any, t: Any, dtype: Any) -> Any:
    rows = np.arange(z.shape[0])
    n = z.shape[0]

    def fb() -> Any:
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        s = e.sum(axis=1, keepdims=True)
        loss = np.mean(np.log(s[:, 0]) + m[:, 0] - z[rows, t])
        g = e / s
        g[rows, t] -= 1
        g /= n
        return loss, g

    def fwd() -> Any:
        m = z.max(axis=1, keepdims=True)
        return np.mean(np.log(np.exp(z - m).sum(axis=1)) + m[:, 0] - z[rows, t])

    return {"numpy naive": (fb, fwd)}


def _scipy(np: ModuleType, z: Any, t: Any, dtype: Any) -> Any:
    from scipy.special import log_softmax

    rows = np.arange(z.shape[0])
    n = z.shape[0]

    def fb() -> Any:
        ls = log_softmax(z, axis=1)
        loss = -ls[rows, t].mean()
        g = np.exp(ls)
        g[rows, t] -= 1
        g /= n
        return loss, g

    def fwd() -> Any:
        return -log_softmax(z, axis=1)[rows, t].mean()

    return {"scipy log_softmax": (fb, fwd)}


def _torch_eager(np: ModuleType, z: Any, t: Any, dtype: Any) -> Any:
    import torch
    import torch.nn.functional as F

    zt, tt = torch.from_numpy(z), torch.from_numpy(t)

    def fb() -> Any:
        x = zt.detach().requires_grad_()
        F.cross_entropy(x, tt).backward()
        return x.grad

    def fwd() -> Any:
        with torch.no_grad():
            return F.cross_entropy(zt, tt)

    return {"torch eager": (fb, fwd)}


def _torch_compile(np: ModuleType, z: Any, t: Any, dtype: Any) -> Any:
    import torch
    import torch.nn.functional as F

    zt, tt = torch.from_numpy(z), torch.from_numpy(t)
    loss_fb = torch.compile(lambda x, y: F.cross_entropy(x, y), dynamic=False)
    loss_fwd = torch.compile(lambda x, y: F.cross_entropy(x, y), dynamic=False)

    def fb() -> Any:
        x = zt.detach().requires_grad_()
        loss_fb(x, tt).backward()
        return x.grad

    def fwd() -> Any:
        with torch.no_grad():
            return loss_fwd(zt, tt)

    return {"torch.compile": (fb, fwd)}


def _jax(np: ModuleType, z: Any, t: Any, dtype: Any) -> Any:
    import jax
    import jax.numpy as jnp
    import optax

    def mean_loss(x: Any, y: Any) -> Any:
        return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(x, y))

    value_and_grad = jax.jit(jax.value_and_grad(mean_loss))
    value = jax.jit(mean_loss)
    zj, tj = jax.device_put(z), jax.device_put(t)

    def fb() -> None:
        loss, g = value_and_grad(zj, tj)
        g.block_until_ready()

    def fwd() -> None:
        value(zj, tj).block_until_ready()

    return {"jax.jit + optax": (fb, fwd)}


_PEER_SETUP = {
    "numpy": (None, _numpy_naive),
    "scipy": ("scipy", _scipy),
    "torch": ("torch", _torch_eager),
    "torch.compile": ("torch", _torch_compile),
    "jax": ("optax", _jax),
}


# ---------------------------------------------------------------- report


def _runtime_info(np: ModuleType) -> dict[str, Any]:
    """Versions, CPU, and the native thread pools (BLAS, OpenMP) through threadpoolctl."""
    from threadpoolctl import threadpool_info

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "isa": _isa(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS"),
        "threadpools": [
            {k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for p in threadpool_info()
        ],
    }
    for mod in ("numba", "scipy", "torch", "jax", "optax"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    import numba

    info["numba_threads"] = numba.get_num_threads()
    return info


def _isa() -> str:
    """The widest x86 vector ISA LLVM (numba's compiler) sees on this CPU, and its CPU name."""
    try:
        import llvmlite.binding as ll

        features = {k for k, v in ll.get_host_cpu_features().items() if v}
        name = ll.get_host_cpu_name()
    except Exception:  # noqa: BLE001 - no llvmlite, or not x86
        return "unknown"
    isa = ("AVX-512" if "avx512f" in features else "AVX2" if "avx2" in features
           else "SSE/other")
    return f"{isa} (LLVM CPU {name})"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _runtime_line(info: dict[str, Any]) -> str:
    pools = info["threadpools"]
    blas = "; ".join(f"{p['internal_api']} {p['version']} ({p['architecture']}, "
                     f"{p['num_threads']} threads)" for p in pools) or "none loaded"
    line = f"numpy {info['numpy']}; native thread pools: {blas}"
    if info.get("OPENBLAS_CORETYPE"):
        line += f"; OPENBLAS_CORETYPE={info['OPENBLAS_CORETYPE']}"
    return line


def format_table(rows: list[dict[str, Any]], floor_name: str) -> str:
    """The results of one shape and mode as a text table (tabulate)."""
    from tabulate import tabulate

    body = [[r["name"], r["ms"], r["x_floor"], r["x_best_peer"], r["peak_extra_mb"]]
            for r in rows if not r.get("error")]
    text = tabulate(body, headers=["method", "ms", f"x {floor_name}", "x best peer",
                                   "peak extra MB"],
                    floatfmt=("", ".2f", ".2f", ".2f", ".0f"), missingval="-")
    failed = [f"{r['name']}: failed: {r['error']}" for r in rows if r.get("error")]
    return "\n".join([text, *failed])


def _parse_shapes(args: argparse.Namespace) -> tuple[tuple[int, int], ...]:
    shapes = []
    for part in args.shapes.split(","):
        try:
            n, c = (int(v) for v in part.lower().split("x"))
        except ValueError:
            n = c = 0
        if n < 1 or c < 1:
            error(args, f"argument --shapes: expected NxC,NxC,... with N, C >= 1, "
                  f"got {args.shapes!r}")
        shapes.append((n, c))
    return tuple(shapes)


def _select_peers(args: argparse.Namespace, text: str) -> Any:
    import importlib.util

    if text == "none":
        return []
    wanted = PEERS if text == "all" else tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in wanted if p not in PEERS]
    if unknown:
        error(args, f"argument --peers: expected names from {', '.join(PEERS)}, 'all' or "
              f"'none', got {', '.join(unknown)}")
    chosen = []
    for name in wanted:
        module, _ = _PEER_SETUP[name]
        if module is None or importlib.util.find_spec(module) is not None:
            chosen.append(name)
    return chosen


def _check_json_path(args: argparse.Namespace) -> None:
    """Fail before the benchmark, not after it, when the results cannot be written."""
    path = args.json
    if path is None:
        return
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        error(args, f"argument --json: expected a file name, got the directory {str(path)!r}")
    if not parent.is_dir():
        error(args, f"argument --json: the directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        error(args, f"argument --json: cannot write {str(path)!r}")


def _run_linear(args: argparse.Namespace) -> int:
    status = _extras.require("bench --linear", ("torch",))
    if status:
        return status
    from crossentropy.cli.bench import linear

    shapes = None
    if args.shapes:
        try:
            shapes = [linear.parse_shape(s) for s in args.shapes.split(",")]
        except (ValueError, argparse.ArgumentTypeError):
            error(args, f"argument --shapes: with --linear, expected NxDxV,..., "
                  f"got {args.shapes!r}")
    linear_args = argparse.Namespace(shapes=shapes, json=args.json, dtype=args.dtype,
                                     threads=args.threads)
    return linear.run(linear_args)


def _run_memory(args: argparse.Namespace) -> int:
    status = _extras.require("bench --memory", ("torch", "tabulate"))
    if status:
        return status
    from tabulate import tabulate

    from crossentropy.cli.bench import worker

    n, c = _parse_shapes(args)[0] if args.shapes else (8192, 32000)
    rows = worker.torch_memory_table(n, c, threads=args.threads or 2)
    print(f"PyTorch forward + backward, {n} x {c} float32 logits, each variant in its own "
          f"process; memory: {describe(rows[0]['method'])}")
    print(tabulate([[r["variant"], r["extra_mib"], r["extra_mib"] / r["logits_mib"]]
                    for r in rows],
                   headers=["variant", "extra peak MiB", "x logits size"],
                   floatfmt=("", ".0f", ".2f")))
    return 0


def _run_warmup() -> int:
    status = _extras.require("bench --warmup", ("numba",))
    if status:
        return status
    from crossentropy._kernels.jit import CACHING
    from crossentropy.cli.bench.warmup import warmup

    seconds = warmup(verbose=True)
    where = ("cached for later processes" if CACHING
             else "not cached: numba found no writable cache directory (NUMBA_CACHE_DIR)")
    print(f"fast-path kernels ready in {seconds:.1f} s, {where}")
    return 0


def _run_frameworks(args: argparse.Namespace) -> int:
    status = _extras.require("bench --frameworks", ("numba", "tabulate"))
    if status:
        return status
    import numba

    from crossentropy.cli.bench import frameworks

    if args.threads is not None:
        numba.set_num_threads(min(args.threads, int(numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    shapes = _parse_shapes(args) if args.shapes else (
        ((4096, 10), (512, 1000), (64, 32000)) if args.quick else frameworks.SHAPES)
    rounds = args.rounds or (3 if args.quick else 7)
    import numpy as np

    info = _runtime_info(np)
    print(f"crossentropy bench --frameworks: float32 logits, mean reduction, forward + "
          f"backward; ours and the peer alternate, {rounds} rounds, median ms"
          + (f"; each row the median of {args.processes} processes" if args.processes > 1
             else ""))
    print(f"machine: {info['cpu']}, {info['isa']} ({info['cpus']} CPUs), {info['platform']}, "
          f"Python {info['python']}")
    print("each framework in a process of its own; peak MiB: " + describe(memory_method())
          + ", one forward + backward", flush=True)
    rows = frameworks.measure(shapes, rounds, threads=args.threads, processes=args.processes)
    print(frameworks.table(rows))
    if args.json:
        args.json.write_text(json.dumps({"info": info, "frameworks": rows}, indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``crossentropy bench`` (or ``--linear``, ``--memory``, ``--warmup``); the exit status."""
    if args.warmup:
        return _run_warmup()
    _check_json_path(args)
    if args.frameworks:
        return _run_frameworks(args)
    if args.linear:
        return _run_linear(args)
    if args.memory:
        return _run_memory(args)
    status = _extras.require("bench", ("numba", "tabulate", "threadpoolctl", "tqdm"))
    if status:
        return status
    import numba
    import numpy as np

    from crossentropy.cli._progress import bar

    if args.threads is not None:
        most = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
        if args.threads > most:
            error(args, f"argument --threads: expected at most {most} "
                  f"(numba's NUMBA_NUM_THREADS), got {args.threads}")
        numba.set_num_threads(args.threads)
    shapes: tuple[tuple[int, int], ...] = _parse_shapes(args) if args.shapes else (
        QUICK_SHAPES if args.quick else FULL_SHAPES)
    rounds = args.rounds or (3 if args.quick else 7)
    peers_arg = args.peers or ("all" if not args.quick else
                               ",".join(p for p in PEERS if p != "torch.compile"))
    peers = _select_peers(args, peers_arg)
    dtype = np.dtype(args.dtype)
    info = _runtime_info(np)
    memory_kind = memory_method()

    print(f"crossentropy bench: {dtype} logits, int64 targets, mean reduction; "
          f"{rounds} interleaved rounds, median ms")
    print(f"machine: {info['cpu']}, {info['isa']} ({info['cpus']} CPUs), {info['platform']}, "
          f"Python {info['python']}")
    print(f"numba {info.get('numba')} ({info.get('numba_threads')} threads: NUMBA_NUM_THREADS "
          f"or --threads), torch {info.get('torch')}, jax {info.get('jax')}, "
          f"optax {info.get('optax')}, scipy {info.get('scipy')}")
    print(_runtime_line(info))
    print("peak extra memory: " + describe(memory_kind), flush=True)

    # first call of the fast path: numba compiles, or loads its cache
    import crossentropy as ce

    rng = np.random.default_rng(0)
    z0 = rng.standard_normal((8, 16)).astype(dtype)
    progress = bar(total=len(shapes) * 2 * (rounds + 2), unit="step", desc="bench")
    progress.set_postfix_str("first call of the fast path (numba compile or cache)")
    t0 = time.perf_counter()
    ce.cross_entropy_with_grad(z0, rng.integers(0, 16, 8))
    ce.cross_entropy(z0, rng.integers(0, 16, 8))
    first_call = time.perf_counter() - t0
    progress.write(f"first call of the fast path (numba compile or cache load): "
                   f"{first_call:.2f} s", file=sys.stdout)

    results = []
    for n, c in shapes:
        z = rng.standard_normal((n, c), dtype=np.float32).astype(dtype, copy=False)
        t = rng.integers(0, c, n)
        methods = _ours(np, z, t, dtype)
        for name in peers:
            try:
                methods.update(_PEER_SETUP[name][1](np, z, t, dtype))
            except Exception as exc:  # a peer that cannot even set up is reported, not fatal
                progress.write(f"  ({name}: setup failed: {exc})", file=sys.stderr)
        floors = floor_passes(np, z)
        for mode, floor_name in FLOOR_NAMES.items():
            idx = 0 if mode == "fwd_bwd" else 1
            what = "forward + backward" if mode == "fwd_bwd" else "forward only"
            progress.set_postfix_str(f"{n} x {c}, {what}: warm-up")
            callables = {k: v[idx] for k, v in methods.items() if v[idx] is not None}
            errors = {}
            for name, fn in list(callables.items()):  # warm up: compile, page in, caches
                try:
                    fn()
                    fn()
                except Exception as exc:
                    errors[name] = f"{type(exc).__name__}: {exc}"[:200]
                    del callables[name]
            progress.update()
            skip = "read: " if mode == "fwd_bwd" else "copy: "
            mode_floors = {k: v for k, v in floors.items() if not k.startswith(skip)}
            timed = dict(mode_floors)
            timed.update(callables)
            progress.set_postfix_str(f"{n} x {c}, {what}: timing")
            times = interleaved(timed, rounds, tick=progress.update)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            floor_ms, set_by = combine(med, mode)
            peer_names = [k for k in callables if not k.startswith("crossentropy")]
            best_peer = min(peer_names, key=lambda k: med[k]) if peer_names else None
            best_ms = med[best_peer] if best_peer else None
            progress.set_postfix_str(f"{n} x {c}, {what}: memory")
            rows = [{"name": floor_name, "group": "floor", "ms": floor_ms, "times_ms": [],
                     "x_floor": 1.0, "x_best_peer": floor_ms / best_ms if best_ms else None,
                     "peak_extra_mb": 0.0, "memory": memory_kind, "tracemalloc_mb": 0.0,
                     "set_by": set_by}]
            for name in [*mode_floors, *callables]:
                mem = peak_extra(timed[name])
                rows.append({
                    "name": name,
                    "group": ("floor pass" if name in mode_floors else
                              "ours" if name.startswith("crossentropy") else "peer"),
                    "ms": med[name],
                    "times_ms": [x * 1e3 for x in times[name]],
                    "x_floor": med[name] / floor_ms,
                    "x_best_peer": med[name] / best_ms if best_ms else None,
                    "peak_extra_mb": mem["bytes"] / 2**20,
                    "memory": mem["method"],
                    "tracemalloc_mb": mem["tracemalloc_bytes"] / 2**20,
                })
            progress.update()
            rows.extend({"name": k, "group": "peer", "error": v} for k, v in errors.items())
            title = f"{what}, {n} x {c} ({z.nbytes / 2**20:.0f} MB of logits)"
            lines = ["", title, format_table(rows, "floor"),
                     f"{floor_name}: {floor_ms:.2f} ms, set by {set_by[0]} "
                     f"(then {set_by[1]}, {med[set_by[1]]:.2f} ms)"]
            ours = "crossentropy fast, out=" if mode == "fwd_bwd" else "crossentropy fast"
            fast = next(r for r in rows if r["name"] == ours)
            if best_peer:
                assert best_ms is not None
                speedup = best_ms / fast["ms"]
                versus = (f"{speedup:.1f}x faster than" if speedup >= 1
                          else f"{1 / speedup:.1f}x slower than")
                lines.append(f"fast path: {fast['x_floor']:.2f}x the {floor_name}, "
                             f"{versus} the fastest peer ({best_peer})")
            progress.write("\n".join(lines), file=sys.stdout)
            results.append({
                "shape": [n, c], "mode": mode, "floor": floor_name, "floor_ms": floor_ms,
                "floor_set_by": set_by,
                "best_peer": best_peer, "best_peer_ms": best_ms, "methods": rows,
            })
            del callables, timed
            gc.collect()
        del methods, floors, z, t
        gc.collect()
    progress.close()

    if args.json:
        payload = {
            "command": "crossentropy bench " + " ".join(sys.argv[2:] if len(sys.argv) > 2
                                                        else []),
            "settings": {"dtype": str(dtype), "rounds": rounds, "peers": peers,
                         "shapes": [list(s) for s in shapes], "quick": bool(args.quick),
                         "memory": memory_kind},
            "runtime": info,
            "first_call_s": first_call,
            "results": results,
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1)
        print(f"\nwrote {args.json}")
    return 0
