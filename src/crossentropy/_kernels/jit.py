"""Compiling and launching the kernels safely wherever numba runs.

* :func:`jit`: ``numba.njit`` with the options of ``_config``, without the
  on-disk cache when numba finds no writable cache directory (an install
  owned by another user, a read-only ``HOME``): the kernels then compile once
  per process instead of failing.
* :func:`rows_kernel`: a kernel compiled twice, rows in parallel (``prange``)
  and serially, and a launcher that picks one per call. The serial copy runs
  calls too small for the thread pool, calls made in a process forked after
  a parallel call (GNU OpenMP and numba's ``workqueue`` do not survive a
  fork), and, under a threading layer that is not thread-safe
  (``workqueue``), calls made while another thread runs a parallel kernel.
"""

from __future__ import annotations

import os
import threading
import types as pytypes
from collections.abc import Callable
from typing import Any, cast

import numba
import numpy as np
from numba import njit
from numpy.typing import NDArray

from crossentropy._config import PARALLEL_MIN_ELEMENTS

__all__ = ["CACHING", "FloatArray", "IntArray", "jit", "parallel_from_any_thread",
           "parallel_usable", "rows_kernel"]

#: The kernels' array arguments, as their Python signatures state them (numba
#: ignores annotations: it compiles one specialisation per argument type).
FloatArray = NDArray[np.floating[Any]]
IntArray = NDArray[np.integer[Any]]


def _probe() -> None:  # a function of this package's directory, for the cache probe
    pass


def _caching_available() -> bool:
    if numba.config.DISABLE_JIT:  # type: ignore[attr-defined]  # not in numba's stubs
        return False
    try:
        from numba.core.caching import FunctionCache

        FunctionCache(_probe)  # type: ignore[no-untyped-call]  # numba leaves it untyped
    except Exception:  # noqa: BLE001 - RuntimeError "no locator available", OSError...
        return False
    return True


#: Whether compiled kernels are cached on disk in this process.
CACHING = _caching_available()


def jit(**options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``numba.njit(**options)``, with ``cache`` only where numba can cache."""
    if options.get("cache") and not CACHING:
        options = {**options, "cache": False}
    return cast(Callable[[Callable[..., Any]], Callable[..., Any]], njit(**options))


# ---------------------------------------------------------------- parallel or serial

_state = {"parallel_ok": True, "launched": False, "thread_safe": None}
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    if _state["launched"]:  # the parent's pool does not exist here
        _state["parallel_ok"] = False


os.register_at_fork(after_in_child=_after_fork_in_child)


def parallel_usable() -> bool:
    """Whether a kernel may start numba's thread pool in this process now."""
    return bool(_state["parallel_ok"] and not numba.config.DISABLE_JIT  # type: ignore[attr-defined]
                and numba.get_num_threads() > 1)


def parallel_from_any_thread() -> bool:
    """Whether a kernel called from outside Python (an XLA custom call) may run in parallel.

    True where :func:`parallel_usable` and numba's threading layer is
    thread-safe (``omp``, ``tbb``); the layer is launched here if no kernel
    has run yet. Such a caller cannot take the lock of the serial fallback.
    Marks the process as having launched the pool (a fork then runs serially).
    """
    if not parallel_usable():
        return False
    if _state["thread_safe"] is None:
        try:
            from numba.np.ufunc.parallel import _launch_threads

            _launch_threads()  # type: ignore[no-untyped-call]  # numba leaves it untyped
            _state["thread_safe"] = numba.threading_layer() in ("tbb", "omp")  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - any failure: serial
            return False
    if _state["thread_safe"]:
        _state["launched"] = True
    return bool(_state["thread_safe"])


def _run_parallel(parallel: Callable[..., Any], serial: Callable[..., Any],
                  args: tuple[Any, ...]) -> Any:
    if _state["thread_safe"]:
        return parallel(*args)
    # First launch (the layer is not known yet) or a layer that is not
    # thread-safe: one parallel call at a time, the others serially.
    if not _lock.acquire(blocking=False):
        return serial(*args)
    try:
        _state["launched"] = True
        result = parallel(*args)
        if _state["thread_safe"] is None:
            try:
                _state["thread_safe"] = numba.threading_layer() in (  # type: ignore[attr-defined]
                    "tbb", "omp")
            except ValueError:  # no parallel region ran
                pass
        return result
    finally:
        _lock.release()


def rows_kernel(
        parallel_options: dict[str, Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Compile ``fn`` twice, in parallel and serially; each call picks one by size and state.

    The size is that of the first argument. The serial copy is a distinct
    function (its own name) so that numba's caches do not collide.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        parallel = jit(**parallel_options)(fn)
        clone = pytypes.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                     fn.__defaults__, fn.__closure__)
        clone.__qualname__ = fn.__qualname__ + "_serial"
        serial = jit(**{**parallel_options, "parallel": False})(clone)

        def launch(*args: Any) -> Any:
            if args[0].size >= PARALLEL_MIN_ELEMENTS and parallel_usable():
                return _run_parallel(parallel, serial, args)
            return serial(*args)

        launch.parallel, launch.serial = parallel, serial  # type: ignore[attr-defined]
        launch.__name__ = launch.__qualname__ = fn.__name__
        launch.__doc__ = fn.__doc__
        return launch

    return wrap
