"""Tunables of the numba kernels in ``_kernels/``, kept in one place.

Threads: the kernels run rows in parallel with ``numba.prange`` and use as
many threads as numba is set to use: ``NUMBA_NUM_THREADS`` in the environment
(read once, at import) or ``numba.set_num_threads(n)`` at run time (at most
``NUMBA_NUM_THREADS``). ``NUMBA_THREADING_LAYER`` picks the pool (``omp``,
``tbb``, ``workqueue``).

Caching: ``cache=True`` stores the compiled machine code next to the module
(``__pycache__``) or in ``NUMBA_CACHE_DIR``; the first call of each kernel in
a fresh environment compiles it (a few seconds), later processes load it.
"""

from __future__ import annotations

#: Fast-math flags of the row kernels: ``reassoc`` lets LLVM vectorise the
#: row reductions (sum, max) with several partial accumulators, ``contract``
#: allows fused multiply-add, ``nsz`` ignores the sign of zero. No ``nnan`` or
#: ``ninf``: NaN and infinities are part of the contract and must propagate.
KERNEL_FASTMATH = frozenset({"reassoc", "contract", "nsz"})

#: Flags of the polynomial ``exp``: only ``contract`` (fused multiply-add). Its
#: range reduction adds and subtracts a large "magic" constant to round to an
#: integer, which ``reassoc`` would fold away.
EXP_FASTMATH = frozenset({"contract"})

#: Options shared by every parallel kernel.
PARALLEL_JIT = {"nogil": True, "cache": True, "parallel": True, "fastmath": set(KERNEL_FASTMATH)}

#: Options of the serial helpers (O(rows) pre-passes).
SERIAL_JIT = {"nogil": True, "cache": True}

#: Options of the row passes, compiled into the kernels that call them.
ROW_JIT = {"nogil": True, "cache": True, "fastmath": set(KERNEL_FASTMATH), "inline": "always"}

#: Below this many elements a call runs on one thread: starting the thread
#: pool costs more than it saves (and on a busy machine much more).
PARALLEL_MIN_ELEMENTS = 1 << 16

#: Up to this many classes, rows go in blocks whose ``exp`` runs over the
#: block's contiguous elements: a row of a few classes is too short for the
#: vector units, a block of rows is not.
SMALL_C = 32

#: Elements per block of the small-class kernel.
BLOCK_ELEMENTS = 4096
