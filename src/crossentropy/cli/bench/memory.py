"""The benchmark's one memory probe: how much more memory a call needed.

:func:`peak_extra` runs a callable once and returns the growth of the
process's memory during the call, measured the best way the platform allows:

``rss-hwm``
    Linux: the resident set's high-water mark (``VmHWM``) is reset through
    ``/proc/self/clear_refs`` before the call and read after it. It sees every
    allocation, NumPy's, PyTorch's or a JIT's, whatever the allocator.
``tracemalloc``
    Elsewhere: the peak of the allocations Python's ``tracemalloc`` sees
    (NumPy's arrays, not PyTorch's or JAX's buffers).

The NumPy-visible peak (``tracemalloc_bytes``) is reported in both cases.
The in-process table of ``crossentropy bench`` and the one-process-per-variant
workers of ``--memory`` (:mod:`crossentropy.cli.bench.worker`) and ``--linear``
(:mod:`crossentropy.cli.bench.linear`) all use it.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any


def _status_bytes(key: str) -> int | None:
    """A ``/proc/self/status`` field such as ``VmRSS``, in bytes (None if unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_rss_peak() -> bool:
    """Reset the resident set's high-water mark; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None


def method() -> str:
    """``"rss-hwm"`` where the high-water mark can be reset, else ``"tracemalloc"``."""
    return "rss-hwm" if reset_rss_peak() else "tracemalloc"


def describe(kind: str) -> str:
    """A phrase naming what the probe ``kind`` measures, for a table's title."""
    return {
        "rss-hwm": "growth of the resident set during one call (VmHWM)",
        "tracemalloc": "NumPy allocations (tracemalloc)",
    }[kind]


def peak_extra(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn`` once; its peak extra memory.

    Returns ``{"bytes": ..., "method": "rss-hwm" | "tracemalloc",
    "tracemalloc_bytes": ...}``.
    """
    gc.collect()
    rss_ok = reset_rss_peak()
    base = _status_bytes("VmRSS") if rss_ok else None
    tracemalloc.start()
    try:
        fn()
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    peak = _status_bytes("VmHWM") if rss_ok else None
    if base is not None and peak is not None:
        return {"bytes": max(peak - base, 0), "method": "rss-hwm", "tracemalloc_bytes": traced}
    return {"bytes": traced, "method": "tracemalloc", "tracemalloc_bytes": traced}
