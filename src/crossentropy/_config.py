"""Tunables of the numba kernels in ``_kernels/``, kept in one place.

Threads: the kernels run blocks of rows in parallel with ``numba.prange`` and
use as many threads as numba is set to use: ``NUMBA_NUM_THREADS`` in the
environment (read once, at import) or ``numba.set_num_threads(n)`` at run time
(at most ``NUMBA_NUM_THREADS``). ``NUMBA_THREADING_LAYER`` picks the pool
(``omp``, ``tbb``, ``workqueue``); any of them is safe (``_kernels/jit.py``):
a layer that is not thread-safe (``workqueue``) runs one parallel call at a
time and the others serially, and a process forked after a parallel call runs
its kernels serially.

Caching: ``cache=True`` stores the compiled machine code next to the module
(``__pycache__``) or in ``NUMBA_CACHE_DIR``; the first call of each kernel in
a fresh environment compiles it (a few seconds), later processes load it.
Where no cache directory is writable the kernels compile without caching,
once per process. ``crossentropy bench --warmup`` compiles (and caches)
the common signatures ahead of time.

``NUMBA_DISABLE_JIT=1`` sends every call to the generic path (the kernels
would run as Python, a thousand times slower); the kernels stay importable and
callable for debugging.
"""

from __future__ import annotations

#: Fast-math flags of the row kernels' arithmetic: none. No ``reassoc``: it
#: rewrites ``(m - z_t) + log s`` as ``(m + log s) - z_t`` and ``(z - m) - log s``
#: as ``z - (m + log s)``, which cancel at large logits. No ``contract``: a
#: gradient ``p_c A - a_c`` fused into one multiply-add leaves the rounding error
#: of ``p_c A`` (say -6e-33) where the two products round to the same number
#: and the plain difference is 0. No ``nnan`` or ``ninf``: NaN and infinities
#: are part of the contract and must propagate.
KERNEL_FASTMATH: frozenset[str] = frozenset()

#: Flags of the row reductions only (``_row_max``, ``_row_sum_exp``,
#: ``_row_exp_store``): ``reassoc`` lets LLVM split the float64 sum of
#: ``exp(z_c - m)`` (non-negative terms: any order is within the same error
#: bound) and the max (exact in any order) over vector lanes. They are compiled
#: as functions of their own, so the flag stays on their instructions.
REDUCE_FASTMATH = frozenset({"reassoc", "contract", "nsz"})

#: Flags of the polynomial ``exp``: only ``contract`` (fused multiply-add). Its
#: range reduction adds and subtracts a large "magic" constant to round to an
#: integer, which ``reassoc`` would fold away.
EXP_FASTMATH = frozenset({"contract"})

#: The widest vectors the kernels' loops may use, in bits (the LLVM function
#: attribute ``prefer-vector-width``). LLVM's tuning for Intel's AVX-512 CPUs
#: (Skylake-SP to Sapphire Rapids) prefers 256 bits, which halves the
#: throughput of the ``exp`` polynomial; CPUs without AVX-512 cap it at 256.
VECTOR_WIDTH = 512

#: Whether to cache compiled kernels on disk (falls back to no caching when
#: numba finds no writable cache directory).
CACHE = True

#: Options shared by every parallel kernel.
PARALLEL_JIT = {"nogil": True, "cache": CACHE, "parallel": True, "fastmath": set(KERNEL_FASTMATH)}

#: Options of the serial helpers (O(rows) pre-passes).
SERIAL_JIT = {"nogil": True, "cache": CACHE}

#: Options of the row passes, compiled into the kernels that call them.
ROW_JIT = {"nogil": True, "cache": CACHE, "fastmath": set(KERNEL_FASTMATH), "inline": "always"}

#: Options of the row reductions: functions of their own (not inlined by
#: numba, so that their flags do not leak into the caller; LLVM may inline
#: them, keeping each instruction's flags).
REDUCE_JIT = {"nogil": True, "cache": CACHE, "fastmath": set(REDUCE_FASTMATH)}

#: Whether the JAX op (``crossentropy.jax.cross_entropy``, and
#: ``crossentropy.cross_entropy`` on JAX arrays) runs index-target calls on the
#: CPU as an XLA custom call of the fused kernels (``_kernels/xla.py``) instead
#: of XLA's own code: one read of the logits and one write of the gradient,
#: with the kernels' ``exp``. Elsewhere (GPU, TPU), and for fewer than
#: ``JAX_KERNEL_MIN_C`` classes, XLA's own code runs.
JAX_CPU_KERNELS = True

#: The fewest classes the JAX op's custom call takes. jit(value_and_grad) at
#: 65536 rows, custom call / XLA's code of the same loss / optax, ms. AMD EPYC
#: Zen 4 (AVX-512), 2026-12-02: 4 classes 1.32 / 0.94 / 0.92, 10 classes
#: 1.52-1.72 / 1.34-1.83 / 1.41-2.01, 16 classes 1.33-1.82 / 1.45-1.77 /
#: 1.54-1.83, 32 classes 2.76 / 3.78 / 4.14 (the call then took three serial
#: passes over the targets, now one). AMD EPYC Zen (AVX2 only), 2026-12-03,
#: one pass: 2 classes 2.35 / 3.71 / 3.76, 4 classes 2.66 / 4.86 / 4.63, 10
#: classes 3.69 / 6.10 / 5.82, 16 classes 4.62 / 8.63 / 8.90. Without AVX-512
#: XLA's code is slow at every class count; with it, below 10 classes it was
#: faster than the call, and at 10 level with it.
JAX_KERNEL_MIN_C = 10

#: Below this many elements a call runs on one thread: starting the thread
#: pool costs more than it saves (and on a busy machine much more).
PARALLEL_MIN_ELEMENTS = 1 << 16

#: Up to this many classes, rows go in blocks whose ``exp`` runs over the
#: block's contiguous elements: a row of a few classes is too short for the
#: vector units, a block of rows is not.
SMALL_C = 32

#: Elements per chunk of a row's ``exp`` when only their sum is wanted (the
#: scratch buffer of ``rows._row_sum_exp``, in L1).
SUM_CHUNK = 1024

#: Bytes of logits plus gradient above which a gradient into a caller's
#: ``out`` is written with non-temporal (streaming) stores, a row at a time
#: through an L1 scratch (``exp.stream_copy``). ``None`` (the default): never.
#: A streaming store writes a cache line without reading it first, and a pure
#: copy gains from it (500 MB on an AMD EPYC (Zen 4), 2 threads: 25.7 ms
#: against 35.7 ms). The fused kernels lose: they are bound by ``exp``, and a
#: plain store's read and write-back overlap that arithmetic, where the
#: scratch's copy-out runs as a burst of its own. Measured side by side on
#: that CPU, ``out=``, float32: 8192 x 1000 3.9-5.3 ms streamed against 2.8-4.4
#: ms plain, 4096 x 32000 59-63 ms against 45-53 ms; on an Intel Xeon the gain
#: when it was added was at most 6%. Set a byte count to try it on a CPU of
#: your own (before the first import of ``crossentropy._kernels``).
STREAM_MIN_BYTES: int | None = None

#: Elements per block of rows: the unit of parallel work, and of the partial
#: sums of a reduced loss (summed in block order, so a result does not depend
#: on the number of threads). This for the elementwise kernels and few
#: classes (up to ``SMALL_C``), whose blocks are one stretch of memory.
BLOCK_ELEMENTS = 4096

#: Blocks of the row kernels (more than ``SMALL_C`` classes): about this many
#: elements, at least ``BLOCK_ROWS_MIN`` rows, but with at least
#: ``BLOCKS_MIN`` blocks where there are that many rows (work for every
#: thread). Each row's ``exp`` pass takes the next row's max, so only the
#: first row of a block has a pass of its own: the longer the block the fewer.
ROW_BLOCK_ELEMENTS = 16384
BLOCK_ROWS_MIN = 8
BLOCKS_MIN = 64

#: How the generic array-API path (``_numerics``; not the kernels) accumulates
#: row sums and batch reductions of float32 (and float16 / bfloat16) inputs:
#:
#: * ``"float64"``: in float64 where the array library has it (else in float32,
#:   as JAX does without ``jax_enable_x64``);
#: * ``"compensated"``: in float32, with compensated sums (a pairwise tree of
#:   error-free ``TwoSum`` steps): no float64 anywhere, the same accuracy
#:   (float32 losses within 2e-7 relative of mpmath);
#: * ``"auto"``: ``"compensated"`` for arrays on an accelerator (CUDA and other
#:   torch devices, CuPy, JAX and TensorFlow on a GPU or TPU), whose float64
#:   runs at 1/2 to 1/64 of float32; ``"float64"`` on the CPU, where float64
#:   costs little.
#:
#: float64 inputs always accumulate in float64. Tests force a mode for a block
#: of code with ``crossentropy._backend.accumulation(mode)``.
ACCUMULATION = "auto"
