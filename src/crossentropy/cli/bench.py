"""``crossentropy bench``: this library against its peers and the memory floors.

Softmax cross-entropy with float32 logits, int64 class indices and the mean
reduction, forward + backward (loss and dL/dlogits) and forward alone. Every
method runs in this one process, in interleaved rounds (method A, B, C, A, B,
C, ...), and the table shows the median. The floors are what no method can
beat: reading the logits once (a sum) and copying them once into a buffer
that already exists (``np.copyto``); forward + backward must at least read
the logits and write a gradient of the same size.

Peak extra memory is the growth of the resident set during one call (Linux:
the high-water mark ``VmHWM`` reset through ``/proc/self/clear_refs``), which
sees every library's allocations; where that is not available, NumPy's
allocations through ``tracemalloc``. The table says which.

Threads: the fast path uses numba's threads (``NUMBA_NUM_THREADS``,
``--threads``); PyTorch and JAX use their own pools, NumPy one thread.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc

FULL_SHAPES = ((65536, 10), (8192, 1000), (4096, 32000), (2048, 128256))
QUICK_SHAPES = ((4096, 10), (512, 1000), (64, 32000))
PEERS = ("numpy", "scipy", "torch", "torch.compile", "jax")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time the fast path against NumPy, SciPy, PyTorch, JAX and the memory floors",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="small shapes and 3 rounds: finishes in seconds")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds per method (default 7, --quick 3)")
    parser.add_argument("--shapes", default=None,
                        help="comma-separated NxC list (default: "
                        + ",".join(f"{n}x{c}" for n, c in FULL_SHAPES) + ")")
    parser.add_argument("--peers", default=None,
                        help="comma-separated subset of " + ",".join(PEERS)
                        + ", or 'all' (those installed) or 'none'; default all, and with "
                        "--quick all but torch.compile (its compilation takes a minute)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, default=None,
                        help="numba threads for the fast path (default: numba's setting)")
    parser.add_argument("--linear", action="store_true",
                        help="instead: linear_cross_entropy vs hidden @ weight.T + "
                        "F.cross_entropy, memory and time (--shapes as NxDxV; slow)")
    parser.add_argument("--memory", action="store_true",
                        help="instead: peak memory of torch fwd+bwd, crossentropy vs "
                        "F.cross_entropy, each in its own process (default 8192x32000)")
    parser.set_defaults(func=run)


# ---------------------------------------------------------------- measuring


def _status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None


def peak_extra_memory(fn) -> dict:
    """Run ``fn`` once; return the peak extra RSS and NumPy (tracemalloc) bytes."""
    gc.collect()
    rss_ok = _reset_rss_peak()
    base = _status_bytes("VmRSS") if rss_ok else None
    tracemalloc.start()
    try:
        fn()
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    peak = _status_bytes("VmHWM") if rss_ok else None
    result = {"tracemalloc_bytes": traced}
    if base is not None and peak is not None:
        result["rss_bytes"] = max(peak - base, 0)
    return result


def interleaved(methods: dict, rounds: int) -> dict:
    """Median seconds of each callable, timed in interleaved rounds."""
    times: dict = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


# ---------------------------------------------------------------- the methods


def _ours(np, z, t, dtype):
    import crossentropy as ce
    from crossentropy import _kernels as K

    buf = np.empty_like(z)

    def fb_out():
        ce.cross_entropy_with_grad(z, t, out=buf)

    def fb_alloc():
        ce.cross_entropy_with_grad(z, t)

    def fwd():
        ce.cross_entropy(z, t)

    def fb_generic():
        with K.disabled():
            ce.cross_entropy_with_grad(z, t)

    def fwd_generic():
        with K.disabled():
            ce.cross_entropy(z, t)

    return {
        "crossentropy fast, out=": (fb_out, None),
        "crossentropy fast": (fb_alloc, fwd),
        "crossentropy generic": (fb_generic, fwd_generic),
    }


def _numpy_naive(np, z, t, dtype):
    rows = np.arange(z.shape[0])
    n = z.shape[0]

    def fb():
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        s = e.sum(axis=1, keepdims=True)
        loss = np.mean(np.log(s[:, 0]) + m[:, 0] - z[rows, t])
        g = e / s
        g[rows, t] -= 1
        g /= n
        return loss, g

    def fwd():
        m = z.max(axis=1, keepdims=True)
        return np.mean(np.log(np.exp(z - m).sum(axis=1)) + m[:, 0] - z[rows, t])

    return {"numpy naive": (fb, fwd)}


def _scipy(np, z, t, dtype):
    from scipy.special import log_softmax

    rows = np.arange(z.shape[0])
    n = z.shape[0]

    def fb():
        ls = log_softmax(z, axis=1)
        loss = -ls[rows, t].mean()
        g = np.exp(ls)
        g[rows, t] -= 1
        g /= n
        return loss, g

    def fwd():
        return -log_softmax(z, axis=1)[rows, t].mean()

    return {"scipy log_softmax": (fb, fwd)}


def _torch_eager(np, z, t, dtype):
    import torch
    import torch.nn.functional as F

    zt, tt = torch.from_numpy(z), torch.from_numpy(t)

    def fb():
        x = zt.detach().requires_grad_()
        F.cross_entropy(x, tt).backward()
        return x.grad

    def fwd():
        with torch.no_grad():
            return F.cross_entropy(zt, tt)

    return {"torch eager": (fb, fwd)}


def _torch_compile(np, z, t, dtype):
    import torch
    import torch.nn.functional as F

    zt, tt = torch.from_numpy(z), torch.from_numpy(t)
    loss_fb = torch.compile(lambda x, y: F.cross_entropy(x, y), dynamic=False)
    loss_fwd = torch.compile(lambda x, y: F.cross_entropy(x, y), dynamic=False)

    def fb():
        x = zt.detach().requires_grad_()
        loss_fb(x, tt).backward()
        return x.grad

    def fwd():
        with torch.no_grad():
            return loss_fwd(zt, tt)

    return {"torch.compile": (fb, fwd)}


def _jax(np, z, t, dtype):
    import jax
    import jax.numpy as jnp
    import optax

    def mean_loss(x, y):
        return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(x, y))

    value_and_grad = jax.jit(jax.value_and_grad(mean_loss))
    value = jax.jit(mean_loss)
    zj, tj = jax.device_put(z), jax.device_put(t)

    def fb():
        loss, g = value_and_grad(zj, tj)
        g.block_until_ready()

    def fwd():
        value(zj, tj).block_until_ready()

    return {"jax.jit + optax": (fb, fwd)}


_PEER_SETUP = {
    "numpy": (None, _numpy_naive),
    "scipy": ("scipy", _scipy),
    "torch": ("torch", _torch_eager),
    "torch.compile": ("torch", _torch_compile),
    "jax": ("optax", _jax),
}


def _floors(np, z):
    buf = np.empty_like(z)
    np.copyto(buf, z)  # touch the pages once

    def read():
        z.sum()

    def copy():
        np.copyto(buf, z)

    return {"read floor": read, "copy floor": copy}


# ---------------------------------------------------------------- report


def _runtime_info(np) -> dict:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS"),
    }
    try:
        from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__
        from numpy._core._multiarray_umath import __cpu_features__ as features

        info["numpy_simd"] = {
            "baseline": list(__cpu_baseline__),
            "dispatch_found": [f for f in __cpu_dispatch__ if features.get(f)],
        }
    except ImportError:  # numpy < 2
        pass
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            {k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for p in threadpool_info()
        ]
    except ImportError:
        info["threadpools"] = None
    for mod in ("numba", "scipy", "torch", "jax", "optax"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    try:
        import numba

        info["numba_threads"] = numba.get_num_threads()
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _runtime_line(info: dict) -> str:
    pools = info.get("threadpools")
    if pools:
        blas = "; ".join(f"{p['internal_api']} {p['version']} ({p['architecture']}, "
                         f"{p['num_threads']} threads)" for p in pools)
    elif pools is None:
        blas = "threadpoolctl not installed"
    else:
        blas = "no BLAS loaded"
    simd = info.get("numpy_simd")
    simd_s = (f", SIMD baseline {' '.join(simd['baseline'])}, dispatch "
              f"{' '.join(simd['dispatch_found'])}" if simd else "")
    line = f"numpy {info['numpy']}: BLAS {blas}{simd_s}"
    if info.get("OPENBLAS_CORETYPE"):
        line += f"; OPENBLAS_CORETYPE={info['OPENBLAS_CORETYPE']}"
    return line


def _fmt_ratio(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _print_table(title, rows, floor_name) -> None:
    print(f"\n{title}")
    head = (f"  {'method':<26}{'ms':>10}{'x ' + floor_name:>12}{'x best peer':>13}"
            f"{'peak extra MB':>15}")
    print(head)
    print("  " + "-" * (len(head) - 2))
    for r in rows:
        mem = r.get("peak_extra_mb")
        mem_s = "-" if mem is None else f"{mem:.0f}"
        if r.get("error"):
            print(f"  {r['name']:<26}  failed: {r['error']}")
            continue
        print(f"  {r['name']:<26}{r['ms']:>10.2f}{_fmt_ratio(r['x_floor']):>12}"
              f"{_fmt_ratio(r['x_best_peer']):>13}{mem_s:>15}")


def _parse_shapes(text):
    shapes = []
    for part in text.split(","):
        try:
            n, c = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--shapes: expected NxC,NxC,..., got {text!r}") from None
        shapes.append((n, c))
    return tuple(shapes)


def _select_peers(text):
    import importlib.util

    if text == "none":
        return []
    wanted = PEERS if text == "all" else tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in wanted if p not in PEERS]
    if unknown:
        raise SystemExit(f"--peers: expected names from {', '.join(PEERS)}, got {unknown}")
    chosen = []
    for name in wanted:
        module, _ = _PEER_SETUP[name]
        if module is None or importlib.util.find_spec(module) is not None:
            chosen.append(name)
    return chosen


def _run_linear(args) -> int:
    from crossentropy import _bench_linear

    shapes = None
    if args.shapes:
        shapes = [_bench_linear._parse_shape(s) for s in args.shapes.split(",")]
    linear_args = argparse.Namespace(shapes=shapes, json=bool(args.json), dtype=args.dtype,
                                     threads=args.threads)
    return _bench_linear.run(linear_args)


def _run_memory(args) -> int:
    from crossentropy import _bench_memory

    n, c = _parse_shapes(args.shapes)[0] if args.shapes else (8192, 32000)
    _bench_memory.print_table(_bench_memory.torch_memory_table(n, c))
    return 0


def run(args) -> int:
    if args.linear:
        return _run_linear(args)
    if args.memory:
        return _run_memory(args)
    import numpy as np

    if args.threads is not None:
        import numba

        numba.set_num_threads(args.threads)
    shapes = _parse_shapes(args.shapes) if args.shapes else (
        QUICK_SHAPES if args.quick else FULL_SHAPES)
    rounds = args.rounds or (3 if args.quick else 7)
    peers_arg = args.peers or ("all" if not args.quick else
                               ",".join(p for p in PEERS if p != "torch.compile"))
    peers = _select_peers(peers_arg)
    dtype = np.dtype(args.dtype)
    info = _runtime_info(np)
    memory_kind = "rss-hwm" if _reset_rss_peak() else "tracemalloc"

    print(f"crossentropy bench: {dtype} logits, int64 targets, mean reduction; "
          f"{rounds} interleaved rounds, median ms")
    print(f"machine: {info['cpu']} ({info['cpus']} CPUs), {info['platform']}, "
          f"Python {info['python']}")
    print(f"numba {info.get('numba')} ({info.get('numba_threads')} threads: NUMBA_NUM_THREADS "
          f"or --threads), torch {info.get('torch')}, jax {info.get('jax')}, "
          f"optax {info.get('optax')}, scipy {info.get('scipy')}")
    print(_runtime_line(info))
    print("peak extra memory: " + ("growth of the resident set during one call (VmHWM)"
                                   if memory_kind == "rss-hwm"
                                   else "NumPy allocations (tracemalloc)"))

    # first call of the fast path: numba compiles, or loads its cache
    import crossentropy as ce

    rng = np.random.default_rng(0)
    z0 = rng.standard_normal((8, 16)).astype(dtype)
    t0 = time.perf_counter()
    ce.cross_entropy_with_grad(z0, rng.integers(0, 16, 8))
    ce.cross_entropy(z0, rng.integers(0, 16, 8))
    first_call = time.perf_counter() - t0
    print(f"first call of the fast path (numba compile or cache load): {first_call:.2f} s")

    results = []
    for n, c in shapes:
        z = rng.standard_normal((n, c), dtype=np.float32).astype(dtype, copy=False)
        t = rng.integers(0, c, n)
        methods = _ours(np, z, t, dtype)
        for name in peers:
            try:
                methods.update(_PEER_SETUP[name][1](np, z, t, dtype))
            except Exception as exc:  # a peer that cannot even set up is reported, not fatal
                print(f"  ({name}: setup failed: {exc})", file=sys.stderr)
        floors = _floors(np, z)
        for mode, floor_name in (("fwd_bwd", "copy floor"), ("fwd", "read floor")):
            idx = 0 if mode == "fwd_bwd" else 1
            callables = {k: v[idx] for k, v in methods.items() if v[idx] is not None}
            errors = {}
            for name, fn in list(callables.items()):  # warm up: compile, page in, caches
                try:
                    fn()
                    fn()
                except Exception as exc:
                    errors[name] = f"{type(exc).__name__}: {exc}"[:200]
                    del callables[name]
            timed = dict(floors)
            timed.update(callables)
            times = interleaved(timed, rounds)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            floor_ms = med[floor_name]
            peer_names = [k for k in callables if not k.startswith("crossentropy")]
            best_peer = min(peer_names, key=med.get) if peer_names else None
            best_ms = med[best_peer] if best_peer else None
            rows = []
            for name in [*floors, *callables]:
                mem = peak_extra_memory(timed[name])
                mem_bytes = mem.get("rss_bytes", mem["tracemalloc_bytes"])
                rows.append({
                    "name": name,
                    "group": ("floor" if name in floors else
                              "ours" if name.startswith("crossentropy") else "peer"),
                    "ms": med[name],
                    "times_ms": [x * 1e3 for x in times[name]],
                    "x_floor": med[name] / floor_ms,
                    "x_best_peer": med[name] / best_ms if best_ms else None,
                    "peak_extra_mb": mem_bytes / 2**20,
                    "memory": "rss-hwm" if "rss_bytes" in mem else "tracemalloc",
                    "tracemalloc_mb": mem["tracemalloc_bytes"] / 2**20,
                })
            rows.extend({"name": k, "group": "peer", "error": v} for k, v in errors.items())
            title = (f"{'forward + backward' if mode == 'fwd_bwd' else 'forward only'}, "
                     f"{n} x {c} ({z.nbytes / 2**20:.0f} MB of logits)")
            _print_table(title, rows, floor_name.split()[0])
            ours = "crossentropy fast, out=" if mode == "fwd_bwd" else "crossentropy fast"
            fast = next(r for r in rows if r["name"] == ours)
            if best_peer:
                print(f"  fast path: {fast['x_floor']:.2f}x the {floor_name}, "
                      f"{best_ms / fast['ms']:.1f}x faster than the fastest peer ({best_peer})")
            results.append({
                "shape": [n, c], "mode": mode, "floor": floor_name, "floor_ms": floor_ms,
                "best_peer": best_peer, "best_peer_ms": best_ms, "methods": rows,
            })
            del callables, timed
            gc.collect()
        del methods, floors, z, t
        gc.collect()

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
