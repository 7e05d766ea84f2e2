"""``crossentropy bench --frameworks``: the framework drop-ins against their peers.

Each row is one framework at one shape, float32 logits, int64 (int32 for JAX)
class indices, mean reduction, forward + backward, the two variants timed in
one process, alternating, ``rounds`` times (median ms; ``speedup`` = peer time /
ours, above 1 is faster). Each framework runs in a worker process of its own
(:func:`frameworks_rows`), or in ``processes`` of them one after the other,
each row then the median of theirs (:func:`combine`): once TensorFlow's or
JAX's thread pools exist, their threads compete for the cores with every other
framework's (the NumPy kernel at 8192 x 1000 took ten times longer after them).

* ``numpy``: ``cross_entropy_with_grad`` (the fused kernels) against a
  NumPy log-softmax written the usual way;
* ``torch``: ``crossentropy.torch.cross_entropy`` against ``F.cross_entropy``
  on CPU tensors that require grad, with the extra peak memory of one
  forward + backward of each, each in a fresh process
  (:mod:`crossentropy.cli.bench.worker`);
* ``torch step``: the same inside a training step, ``(h @ W)`` -> loss ->
  ``backward()``, so torch's and numba's thread pools take turns;
* ``jax``: ``jax.jit(jax.value_and_grad(...))`` against optax's
  ``softmax_cross_entropy_with_integer_labels``;
* ``jax step``: the same inside one compiled training step, the gradient
  of the loss of ``h @ W`` with respect to ``W``, the batch ``(h, t)`` an
  argument of the step;
* ``tf`` / ``tf eager``: ``crossentropy.tensorflow.cross_entropy`` against
  ``tf.nn.sparse_softmax_cross_entropy_with_logits`` under a
  ``GradientTape``, in a ``tf.function`` and eagerly.

The gradient column is ``max |g - g_peer| / max |g_peer|``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from crossentropy.cli.bench import interleaved, worker

SHAPES = ((65536, 10), (8192, 1000), (4096, 32000))
HIDDEN = 256  # width of the training step's matmul


def _alternate(ours: Callable[[], Any], peer: Callable[[], Any], rounds: int) -> tuple[Any, ...]:
    """Median milliseconds of ``ours`` and ``peer``, after a warm-up call of each.

    Timed in rounds of both, in an order shuffled anew each round (seeded:
    ``crossentropy.cli.bench.interleaved``): with ``ours`` always first, the
    JAX op at 4096 x 32000 measured 0.4-3.5% slower than optax in three runs;
    with shuffled rounds the same programs measured level or faster.
    """
    ours(), peer()  # warm up (compile, caches)
    times = interleaved({"ours": ours, "peer": peer}, rounds)
    return statistics.median(times["ours"]) * 1e3, statistics.median(times["peer"]) * 1e3


def _rel(g: Any, ref: Any) -> float:
    import numpy as np

    g, ref = np.asarray(g, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(g - ref)) / max(np.max(np.abs(ref)), 1e-300))


def _row(framework: str, n: int, c: int, ours: float, peer: float, grad_rel: float,
         **extra: Any) -> dict[str, Any]:
    return {"framework": framework, "shape": f"{n}x{c}", "ours_ms": ours, "peer_ms": peer,
            "speedup": peer / ours, "grad_rel": grad_rel, **extra}


def numpy_rows(n: int, c: int, rounds: int) -> list[dict[str, Any]]:
    """The fused kernels (``cross_entropy_with_grad``) vs a NumPy log-softmax."""
    import numpy as np

    import crossentropy as ce

    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, c), dtype=np.float32)
    t = rng.integers(0, c, n)

    def peer() -> Any:
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        s = e.sum(axis=1, keepdims=True)
        loss = np.mean(np.log(s[:, 0]) + m[:, 0] - z[np.arange(n), t])
        g = e / s
        g[np.arange(n), t] -= 1
        return loss, g / n

    ours: Callable[[], Any] = lambda: ce.cross_entropy_with_grad(z, t)  # noqa: E731
    a, b = _alternate(ours, peer, rounds)
    return [_row("numpy", n, c, a, b, _rel(ours()[1], peer()[1]))]


def torch_rows(n: int, c: int, rounds: int) -> list[dict[str, Any]]:
    """The torch op vs ``F.cross_entropy``, alone and in a training step; peak memory."""
    import torch
    import torch.nn.functional as F

    from crossentropy.torch import cross_entropy

    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, c, generator=g).requires_grad_(True)
    t = torch.randint(0, c, (n,), generator=g)

    def fwd_bwd(fn: Callable[..., Any]) -> Callable[[], Any]:
        def run() -> Any:
            z.grad = None
            fn(z, t).backward()
            return z.grad
        return run

    ours, peer = fwd_bwd(cross_entropy), fwd_bwd(F.cross_entropy)
    a, b = _alternate(ours, peer, rounds)
    rel = _rel(ours().numpy(), peer().numpy())
    z.grad = None
    mem = {r["variant"]: r["extra_mib"]
           for r in worker.torch_memory_table(n, c, threads=torch.get_num_threads())}
    rows = [_row("torch", n, c, a, b, rel, ours_peak_mib=mem["crossentropy"],
                 peer_peak_mib=mem["torch"])]
    h = torch.randn(n, HIDDEN, generator=g)
    W = (torch.randn(HIDDEN, c, generator=g) * 0.05).requires_grad_(True)

    def step(fn: Callable[..., Any]) -> Callable[[], Any]:
        def run() -> Any:
            W.grad = None
            fn(h @ W, t).backward()
            return W.grad
        return run

    a, b = _alternate(step(cross_entropy), step(F.cross_entropy), rounds)
    rows.append(_row("torch step", n, c, a, b,
                     _rel(step(cross_entropy)().numpy(), step(F.cross_entropy)().numpy())))
    return rows


def jax_rows(n: int, c: int, rounds: int) -> list[dict[str, Any]]:
    """``jax.jit(jax.value_and_grad(...))`` of ours vs optax."""
    import jax
    import optax

    import crossentropy as ce

    key = jax.random.PRNGKey(0)
    z = jax.random.normal(key, (n, c))
    t = jax.random.randint(key, (n,), 0, c)
    f_ours = jax.jit(jax.value_and_grad(lambda x, y: ce.cross_entropy(x, y)))
    f_peer = jax.jit(jax.value_and_grad(
        lambda x, y: optax.softmax_cross_entropy_with_integer_labels(x, y).mean()))
    ours: Callable[[], Any] = lambda: jax.block_until_ready(f_ours(z, t))  # noqa: E731
    peer: Callable[[], Any] = lambda: jax.block_until_ready(f_peer(z, t))  # noqa: E731
    a, b = _alternate(ours, peer, rounds)
    rows = [_row("jax", n, c, a, b, _rel(ours()[1], peer()[1]))]
    h = jax.random.normal(jax.random.PRNGKey(1), (n, HIDDEN))
    W = jax.random.normal(jax.random.PRNGKey(2), (HIDDEN, c)) * 0.05
    # the batch (h, t) is an argument of the step, as in a training loop: captured,
    # it would be a constant of the compiled program, which XLA folds into it
    s_ours = jax.jit(jax.grad(lambda w, x, y: ce.cross_entropy(x @ w, y)))
    s_peer = jax.jit(jax.grad(
        lambda w, x, y: optax.softmax_cross_entropy_with_integer_labels(x @ w, y).mean()))
    ours = lambda: jax.block_until_ready(s_ours(W, h, t))  # noqa: E731
    peer = lambda: jax.block_until_ready(s_peer(W, h, t))  # noqa: E731
    a, b = _alternate(ours, peer, rounds)
    rows.append(_row("jax step", n, c, a, b, _rel(ours(), peer())))
    return rows


def tf_rows(n: int, c: int, rounds: int) -> list[dict[str, Any]]:
    """Ours vs ``tf.nn.sparse_softmax_cross_entropy_with_logits``, tf.function and eager."""
    import tensorflow as tf

    from crossentropy.tensorflow import cross_entropy

    g = tf.random.Generator.from_seed(0)
    z = g.normal((n, c))
    t = g.uniform((n,), 0, c, dtype=tf.int64)

    def ours_fn(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = cross_entropy(x, y)
        return loss, tape.gradient(loss, x)

    def peer_fn(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, x))
        return loss, tape.gradient(loss, x)

    rows: list[dict[str, Any]] = []
    for name, wrap in (("tf", tf.function), ("tf eager", lambda f: f)):
        fo, fp = wrap(ours_fn), wrap(peer_fn)
        ours: Callable[..., Any] = lambda fo=fo: fo(z, t)[1].numpy()  # noqa: E731
        peer: Callable[..., Any] = lambda fp=fp: fp(z, t)[1].numpy()  # noqa: E731
        a, b = _alternate(ours, peer, rounds)
        rows.append(_row(name, n, c, a, b, _rel(ours(), peer())))
    return rows


MEASURES = {"numpy": numpy_rows, "torch": torch_rows, "jax": jax_rows, "tensorflow": tf_rows}


def measure(shapes: Sequence[tuple[int, int]] = SHAPES, rounds: int = 7,
            frameworks: Sequence[str] = tuple(MEASURES), progress: Callable[[str], Any] = print,
            threads: int | None = None, processes: int = 1) -> list[dict[str, Any]]:
    """Rows of the frameworks table, by shape; each framework in worker processes of its own.

    A framework that is not installed is skipped. ``threads``: numba's threads
    in the workers (default: numba's setting). ``processes`` > 1 runs each
    framework's worker that many times, one after the other, and gives each
    row the median over the processes (:func:`combine`): a process's heap
    decides, call by call and with odds that differ from process to process,
    whether a large result buffer comes back as fresh pages (thousands of
    page faults in one call, ours or the peer's).
    """
    rows: list[dict[str, Any]] = []
    for name in frameworks:
        runs: list[list[dict[str, Any]]] = []
        for _ in range(processes):
            run: list[dict[str, Any]] = []
            for r in frameworks_rows(name, shapes, rounds, threads):
                if "skipped" in r:
                    progress(r["skipped"])
                    break
                run.append(r)
                progress(format_row(r))
            if not run:
                break
            runs.append(run)
        if runs:
            rows.extend(combine(runs))
    order = {f"{n}x{c}": i for i, (n, c) in enumerate(shapes)}
    return sorted(rows, key=lambda r: order[r["shape"]])  # stable: frameworks keep their order


def combine(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (framework, shape) from several processes' rows: the medians.

    The medians over the processes of ``ours_ms``, ``peer_ms``, the peak MiB
    and ``speedup`` (the median of the processes' speedups, not the ratio of
    the medians); the largest ``grad_rel``; ``speedups`` lists each
    process's speedup. A single run is returned as it is.
    """
    if len(runs) == 1:
        return runs[0]
    out = []
    for same in zip(*runs, strict=True):
        row = dict(same[0])
        for key in ("ours_ms", "peer_ms", "speedup", "ours_peak_mib", "peer_peak_mib"):
            if key in row:
                row[key] = statistics.median(r[key] for r in same)
        row["grad_rel"] = max(r["grad_rel"] for r in same)
        row["speedups"] = [r["speedup"] for r in same]
        out.append(row)
    return out


def frameworks_here(name: str, rounds: int, threads: int | None,
                    shapes: Sequence[tuple[int, ...]]) -> None:
    """The ``frameworks`` worker's body: ``name``'s rows at each shape, one JSON line each."""
    if threads:
        import numba

        numba.set_num_threads(min(threads, int(numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    for n, c in shapes:
        try:
            rows = MEASURES[name](n, c, rounds)
        except ImportError as exc:
            print(json.dumps({"skipped": f"{name}: skipped ({exc})"}), flush=True)
            return
        for row in rows:
            print(json.dumps(row), flush=True)


def frameworks_rows(name: str, shapes: Sequence[tuple[int, int]], rounds: int,
                    threads: int | None = None) -> Iterator[dict[str, Any]]:
    """Run ``name``'s rows in a fresh worker process; yield each row (a dict) as it arrives.

    A framework that is not installed yields one ``{"skipped": message}``.
    """
    cmd = [sys.executable, "-m", __name__, "--worker", name, str(rounds), str(threads or 0),
           *(f"{n}x{c}" for n, c in shapes)]
    with tempfile.TemporaryFile("w+") as err, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True) as proc:  # a file: no pipe stall
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                yield json.loads(line)
        if proc.wait() != 0:
            err.seek(0)
            raise RuntimeError(f"benchmark worker failed ({' '.join(cmd)}):\n{err.read()}")


def format_row(r: dict[str, Any]) -> str:
    """One row as a progress line."""
    mem = ""
    if "ours_peak_mib" in r:
        mem = f"  peak MiB {r['ours_peak_mib']:.0f} vs {r['peer_peak_mib']:.0f}"
    return (f"{r['framework']:<11} {r['shape']:>10}  ours {r['ours_ms']:9.2f} ms  "
            f"peer {r['peer_ms']:9.2f} ms  x{r['speedup']:5.2f}  grad rel {r['grad_rel']:.1e}"
            + mem)


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a table (tabulate)."""
    from tabulate import tabulate

    peers = {"numpy": "NumPy log-softmax", "torch": "F.cross_entropy",
             "torch step": "h@W + F.cross_entropy", "jax": "optax", "jax step": "h@W + optax",
             "tf": "tf.nn (tf.function)",
             "tf eager": "tf.nn (eager)"}

    def spread(r: dict[str, Any]) -> str | None:
        s = r.get("speedups")
        return f"{min(s):.2f}-{max(s):.2f}" if s else None

    # (header, float format, value); the spread only for rows of several processes
    columns: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
        ("ours", "", lambda r: r["framework"]),
        ("peer", "", lambda r: peers.get(r["framework"], "")),
        ("N x C", "", lambda r: r["shape"]),
        ("ours ms", ".2f", lambda r: r["ours_ms"]),
        ("peer ms", ".2f", lambda r: r["peer_ms"]),
        ("speedup", ".2f", lambda r: r["speedup"]),
        ("processes' speedups", "", spread),
        ("grad rel diff", ".1e", lambda r: r["grad_rel"]),
        ("ours peak MiB", ".0f", lambda r: r.get("ours_peak_mib")),
        ("peer peak MiB", ".0f", lambda r: r.get("peer_peak_mib")),
    ]
    if not any(r.get("speedups") for r in rows):
        columns = [col for col in columns if col[2] is not spread]
    headers = [h for h, _, _ in columns]
    floatfmt = tuple(f for _, f, _ in columns)
    body = [[value(r) for _, _, value in columns] for r in rows]
    return tabulate(body, headers=headers, floatfmt=floatfmt, missingval="")


if __name__ == "__main__":  # python -m crossentropy.cli.bench.frameworks [rounds]
    if sys.argv[1:2] == ["--worker"]:  # --worker NAME ROUNDS THREADS NxC [NxC ...]
        frameworks_here(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                        [tuple(int(v) for v in s.split("x")) for s in sys.argv[5:]])
        sys.exit(0)
    result = measure(rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 7)
    print(table(result))
