"""The row-chunk engine behind every torch loss that never holds all the logits.

``linear_cross_entropy`` (``hidden @ weight.T + bias`` computed a chunk of
rows at a time), ``vocab_parallel_cross_entropy`` (logits whose classes are
split across ranks) and ``vocab_parallel_linear_cross_entropy`` (both) are
one pipeline here:

    source (logits of a chunk of rows)  ->  row math  ->  sink (gradients)

- the *source* writes a chunk's logits into a reused workspace: a matmul
  (``_Linear``) or a copy of the given logits (``_Logits``);
- the *row math* (``_forward_rows``, ``_backward_rows``) turns them into row
  losses and, in place, the gradient with respect to the logits. It sees
  only this rank's classes; the few per-row numbers that need the other
  ranks go through ``Shard.all_reduce``, the identity without a shard;
- the *sink* (the same ``_Linear`` / ``_Logits`` object) accumulates
  ``d hidden``, ``d weight``, ``d bias`` or writes ``d logits``.

Gradients come in one of two modes: *eager* (computed chunk by chunk in
the forward pass, scaled by ``grad_output`` in backward: Liger-Kernel's way,
three matmuls for the linear form) or *recompute* (logits rebuilt in backward
from the saved per-row log-sum-exp: Apple's Cut Cross-Entropy way, four
matmuls). With no shard the pipeline is the single-process one: there is
only one.

Vocabulary (the house one, see ``_numerics``): ``z`` logits of a chunk
(after the optional softcap), ``t = tanh(a / softcap)`` of the raw logits
``a``, ``m`` row max, ``lse`` row log-sum-exp, ``p`` softmax, ``g`` gradient
with respect to ``a``, ``a_c`` the row's target mass on class ``c``, ``keep``
counted (non-ignored) rows, ``scale`` per-row factor of ``g``. With ``e`` the
label smoothing, ``w`` optional class weights and ``V`` the global class
count, ``a_c = (1 - e) w_t [c == t] + (e / V) w_c`` for an index target ``t``
and ``a_c = w_c ((1 - e) y_c + e / V)`` for probabilities ``y``.

Per counted row, each rank ``r`` computes over its own classes its max
``m_r``, ``log s_r = log sum_c exp(z_c - m_r)``, ``A_r = sum a_c`` and
``D_r = sum a_c (m_r - z_c)``; then, with ``M = max_r m_r`` (an all-reduce
MAX of one number per row)::

    S    = sum_r s_r exp(m_r - M)               lse = M + log S
    loss = A log S + sum_r [A_r (M - m_r) + D_r] + z_loss lse^2       (A = sum_r A_r)
    d loss / d z_c = (A + 2 z_loss lse) exp(z_c - M - log S) - a_c

(one all-reduce SUM of three numbers per row). Every term of the loss is
non-negative, so nothing cancels: float32 stays as accurate as
``F.cross_entropy`` whatever the logits' offset, and ``lse`` is never
rounded at the logits' magnitude before use. With one process ``S = s``.
The rank's softmax ``p_c = exp(z_c - m_r - log s_r)`` comes from one fused
kernel; the global one is ``p_c`` times ``exp((m_r - M) + (log s_r - log S))``.
Softcap ``s``: ``z = s tanh(a / s)``, ``dz/da = 1 - t^2``; then
``d hidden = g @ W`` (all-reduced over ranks), ``d W = g.T @ hidden``,
``d b = sum_rows g``. The backward saves ``M``, ``log S`` and
``coef = A + 2 z_loss lse`` per row and needs no other communication.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from crossentropy import _validate
from crossentropy._backend import namespace, torch_transformed
from crossentropy._engine import kernels
from crossentropy.torch._autograd import refuse_second_order

#: Cap on the working memory of one chunk's buffers (bytes); see ``auto_chunk_size``.
MEMORY_BUDGET = 84 * 2**20
#: Chunks smaller than this (bytes) are not worth the loop: small problems take fewer chunks.
MIN_CHUNK_BYTES = 8 * 2**20
#: Target number of chunks: a chunk is about 1/CHUNKS_PER_PASS of the full logits.
CHUNKS_PER_PASS = 12
#: Bytes of a chunk's logits computed by one matmul call (see ``_Linear.logits``).
LOGITS_BLOCK_BYTES = 4 * 2**20
#: Chunks of fewer logits take the generic softmax path (see ``softmax_``).
_FUSED_SOFTMAX_MIN = 2**16

_LOW_PRECISION = (torch.float16, torch.bfloat16)

# How the gradients are obtained (see the module docstring).
EAGER = "eager"
RECOMPUTE = "recompute"
MODES = ("auto", EAGER, RECOMPUTE)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------- options


def check_chunk_size(value: Any) -> int | None:
    """``None`` or a positive integer.

    As everywhere in the library, a value of the wrong type (``2.5``,
    ``"8"``, ``True``) is a ``TypeError`` and an integer out of range
    (``0``) a ``ValueError``.
    """
    if value is None:
        return None
    message = f"chunk_size: expected a positive integer or None, got {value!r}"
    if isinstance(value, bool):
        raise TypeError(message)
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(message) from None
    if value < 1:
        raise ValueError(message)
    return int(value)


def check_softcap(value: Any) -> float | None:
    """``None`` or a positive finite number."""
    if value is None:
        return None
    value = _validate.real_number(value, "softcap")
    if value <= 0:
        raise ValueError(f"softcap: expected a positive number or None, got {value!r}")
    return float(value)


def resolve_mode(mode: str, reduction: str, target_grad: bool) -> str:
    """``"auto"`` -> eager unless the per-row upstream gradient or d target is needed."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if mode == EAGER and reduction == "none":
        raise ValueError("mode: 'eager' needs reduction 'mean' or 'sum', got 'none'")
    if target_grad or reduction == "none":
        return RECOMPUTE
    return EAGER if mode == "auto" else mode


def _bytes_per_logit(dtype: torch.dtype, softcap: float | None, soft: bool) -> int:
    """Bytes of working memory per logit of a chunk (how many C x V buffers live at once)."""
    cbytes = compute_dtype(dtype).itemsize
    nbytes = cbytes  # the chunk's logits, turned into g in place
    if softcap is not None:
        nbytes += cbytes  # tanh(a / s) kept for the derivative
    if dtype in _LOW_PRECISION:
        nbytes += 2 * dtype.itemsize  # matmul output before upcast, g cast down for g @ W
    if soft:
        nbytes += cbytes  # the target chunk converted
    return nbytes


def auto_chunk_size(
    n_rows: int,
    num_classes: int,
    dtype: torch.dtype = torch.float32,
    *,
    softcap: float | None = None,
    soft: bool = False,
    budget: int = MEMORY_BUDGET,
) -> int:
    """The default ``chunk_size`` for ``N = n_rows`` tokens and ``V = num_classes``.

    With ``b`` the bytes of working memory per logit of a chunk (4 for float32
    logits, 8 for float64; +4 with ``softcap``, whose ``tanh`` is kept for the
    derivative; +4 for soft targets, converted per chunk; +4 for float16 and
    bfloat16 inputs, the matmul's output before the float32 upcast and the
    gradient cast back) and ``row = V * b``::

        chunk_size = clamp(max(ceil(N / 12), 8 MiB // row), 1, min(N, budget // row))

    i.e. about a twelfth of the full logits (the naive version's working
    memory is about two ``N x V`` float32 tensors, the logits and their
    gradient, so a chunk is about 4% of it, and the matmul's scratch, at most
    ``LOGITS_BLOCK_BYTES`` (see ``_Linear.logits``), keeps the whole under
    5%), no chunk smaller than 8 MiB unless the whole problem is, and never
    more than ``budget`` (84 MiB) of chunk buffers, whatever ``N``. Fewer,
    larger chunks run faster: every chunk streams the weight through two
    matmuls and reads and writes ``d weight`` once, whatever its rows; the
    budget is what bounds them. For float32: ``N = 4096, V = 32000`` gives
    342 rows (42 MiB); ``N = 2048, V = 128256`` gives 171 rows (84 MiB).
    ``V`` is the classes of this rank (its shard).

    >>> auto_chunk_size(4096, 32000), auto_chunk_size(2048, 128256)
    (342, 171)
    >>> auto_chunk_size(100, 32000), auto_chunk_size(10**6, 32000)
    (65, 688)
    """
    row = max(1, num_classes) * _bytes_per_logit(dtype, softcap, soft)
    rows = max(-(-n_rows // CHUNKS_PER_PASS), MIN_CHUNK_BYTES // row)
    return int(max(1, min(rows, n_rows, budget // row)))


@dataclass(frozen=True)
class Shard:
    """A rank's contiguous slice ``[start, start + local)`` of ``classes`` classes."""

    group: Any  # the process group handle (None: the default group)
    world: int
    start: int
    classes: int

    def all_reduce(self, x: torch.Tensor, op: Any) -> torch.Tensor:
        """In place over the group; the identity for a world of one."""
        if self.world > 1:
            dist.all_reduce(x, op=op, group=self.group)
        return x


@dataclass(frozen=True)
class Options:
    """Everything but the arrays; travels through the autograd Function as one object."""

    local: int  # classes in this process's logits (all of them without a shard)
    soft: bool  # probability targets (else class indices)
    ignore_index: int
    label_smoothing: float
    reduction: str
    divisor: float | None
    z_loss: float
    softcap: float | None
    chunk_size: int
    mode: str  # EAGER or RECOMPUTE (resolved)
    shard: Shard | None = None

    @property
    def classes(self) -> int:
        return self.local if self.shard is None else self.shard.classes

    @property
    def start(self) -> int:
        return 0 if self.shard is None else self.shard.start

    def all_reduce(self, x: torch.Tensor, op: Any) -> torch.Tensor:
        return x if self.shard is None else self.shard.all_reduce(x, op)


# ----------------------------------------------------------------------------- row math


def _softmax_parts_(z: torch.Tensor,
                    fused: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``z`` replaced by its row softmax ``p``; returns ``(p, m, log_s)``.

    ``m`` is the row max and ``log_s = log sum_c exp(z_c - m)`` (so the row's
    log-sum-exp is ``m + log_s``, never rounded at the logits' magnitude). On
    CPU, one fused ATen kernel (max, exp, sum and scale per row, while the row
    sits in cache) overwrites ``z``; then ``log_s = -log max_c p_c``, since
    ``p`` at the row's maximum is exactly the rounded ``1 / sum exp(z - m)``.
    Elsewhere, for small chunks (where the kernel's thread start-up costs more
    than the passes it saves) or with ``fused=False``: the same in four
    in-place steps. (``amax`` rather than ``max(dim)``: the latter, with its
    indices, is several times slower on CPU.) A row of only ``-inf`` (or of
    no class at all) gets ``p = 0``, ``m = -inf`` and ``log_s = 0``.
    """
    if z.shape[1] == 0:
        return z, torch.full(z.shape[:1], -torch.inf, dtype=z.dtype, device=z.device), \
            torch.zeros(z.shape[:1], dtype=z.dtype, device=z.device)
    if fused is None:
        fused = z.device.type == "cpu" and z.numel() >= _FUSED_SOFTMAX_MIN
    m = z.amax(dim=1)
    empty = torch.isneginf(m)
    if fused:
        torch.ops.aten._softmax.out(z, 1, False, out=z)
        log_s = z.amax(dim=1).log_().neg_()
        if bool(empty.any()):  # softmax of -inf only is NaN
            z.masked_fill_(empty[:, None], 0.0)
            log_s.masked_fill_(empty, 0.0)
        return z, m, log_s
    p = z.sub_(torch.where(empty, 0.0, m)[:, None]).exp_()
    sum_exp = p.sum(dim=1)
    p.div_(torch.where(empty, 1.0, sum_exp)[:, None])
    return p, m, torch.where(empty, 0.0, sum_exp.log())


def softmax_(z: torch.Tensor, fused: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``z`` replaced by its row softmax ``p``; returns ``(p, lse)`` (see ``_softmax_parts_``)."""
    p, m, log_s = _softmax_parts_(z, fused)
    return p, m + log_s


def _neg_dot(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``-sum_c a_c d_c`` per row, with ``0 * -inf = 0`` (no mass on a masked class)."""
    prod = torch.mul(a, d)
    return prod.nan_to_num_(nan=0.0, posinf=torch.inf, neginf=-torch.inf).sum(dim=1).neg_()


@dataclass
class _Rows:
    """The targets of a block of rows, in the form the row math reads them.

    Index targets: ``col`` the target's column in this rank's logits (0 when
    it lives elsewhere or the row is ignored), ``w_t`` its weight here (0
    elsewhere; 1 without class weights), ``keep`` the counted rows.
    Probability targets: ``y`` this rank's slice, ``keep`` all rows.
    """

    keep: torch.Tensor
    col: torch.Tensor | None = None
    w_t: torch.Tensor | None = None
    y: torch.Tensor | None = None

    def __getitem__(self, rows: slice) -> _Rows:
        return _Rows(self.keep[rows], *(None if x is None else x[rows]
                                        for x in (self.col, self.w_t, self.y)))


def _target_mass(ws: _Workspace, rows: _Rows, w: torch.Tensor | None, o: Options) -> torch.Tensor:
    """``a = w ((1 - e) y + e / V)`` for a chunk of probability targets, in the workspace."""
    assert rows.y is not None
    a = ws.target(rows.y)
    e = o.label_smoothing
    if e:
        a.mul_(1.0 - e).add_(e / o.classes)
    return a if w is None else a.mul_(w)


def _finite(x: torch.Tensor) -> torch.Tensor:
    """``x`` with ``-inf`` (the max of a row of only ``-inf``) replaced by 0."""
    return torch.where(torch.isneginf(x), 0.0, x)


def _target_terms(z: torch.Tensor, rows: _Rows, w: torch.Tensor | None, o: Options,
                  ws: _Workspace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Return ``(A_r, D_r, a)`` of a chunk.

    ``z`` is already shifted by its row max, except for index targets without
    smoothing (then ``D_r = -w_t z_t``, completed by the caller).
    """
    e = o.label_smoothing
    if o.soft:
        a = _target_mass(ws, rows, w, o)
        return a.sum(dim=1), _neg_dot(a, z), a
    assert rows.w_t is not None and rows.col is not None  # index targets
    w_t = rows.w_t * (1.0 - e)
    z_t = z.gather(1, rows.col[:, None]).squeeze(1) if o.local else torch.zeros_like(w_t)
    big_a, big_d = w_t, torch.where(w_t == 0, 0.0, -w_t * z_t)
    if e:  # the uniform part: (e / V) sum_c w_c (m - z_c) on counted rows
        on = rows.keep.to(z.dtype) * (e / o.classes)
        big_a = big_a + on * (float(o.local) if w is None else w.sum())
        big_d = big_d + torch.where(rows.keep, on * (-z.sum(dim=1) if w is None
                                                     else _neg_dot(w, z)), 0.0)
    return big_a, big_d, None


def _row_kernels(z: torch.Tensor, t: torch.Tensor | None, o: Options) -> Any:
    """The fused row kernels (``crossentropy._kernels``) if they take this chunk, else None.

    They take the common case: one process, index targets, no label
    smoothing, no softcap (``t is None``), float32 or float64 CPU logits
    (contiguous: the workspace). There one kernel reads each row once and
    leaves the gradient in its place (max, ``exp`` and sum, scale: the later
    passes find the row in cache), where the torch steps take six passes
    over the chunk. Everything else (also tensors under ``torch.func`` or
    ``torch.compile``, which no NumPy view can read) takes the torch steps below.
    """
    if (o.shard is not None or o.soft or o.label_smoothing or t is not None or not o.local
            or z.device.type != "cpu" or z.dtype not in (torch.float32, torch.float64)
            or not z.is_contiguous() or z.numel() == 0 or torch_transformed(z)):
        return None
    k = kernels()
    return k if k is not None and k.applicable(z.detach().numpy(), 1) else None


def _np(x: torch.Tensor) -> Any:
    """A NumPy view (shared memory) of a contiguous CPU tensor."""
    return x.detach().contiguous().numpy()


def _forward_rows_fused(k: Any, z: torch.Tensor, rows: _Rows, scale: torch.Tensor, o: Options,
                        want_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                  torch.Tensor, torch.Tensor | None]:
    """``_forward_rows`` on the fused kernel (no shard, index targets, no smoothing or softcap).

    The kernel leaves per row the max ``m``, ``log_s`` and the target logit
    ``z_t``, and ``g`` in place of ``z`` with ``coef = A + 2 z_loss lse``
    (``A = w_t``). Here ``shift = m`` (0 for a row of only -inf) and the loss
    is ``A ((m - z_t) + log_s) + z_loss lse^2``.
    """
    n = z.shape[0]
    m, log_s, z_t = (torch.empty(n, dtype=z.dtype, device=z.device) for _ in range(3))
    assert rows.col is not None and rows.w_t is not None  # index targets
    big_a = rows.w_t.to(z.dtype)
    k.ce_index_chunk(_np(z), _np(rows.col), _np(big_a), _np(big_a), _np(scale), o.z_loss,
                     _np(m), _np(log_s), _np(z_t))
    shift = _finite(m)
    lse = shift + log_s
    keep, zl = rows.keep, o.z_loss
    loss = torch.where(keep, torch.where(big_a == 0, 0.0, big_a * ((shift - z_t) + log_s))
                       + zl * lse * lse, 0.0)
    coef = torch.where(keep, big_a + 2.0 * zl * lse, 0.0)
    # rows of only -inf: an error if counted (raised after the loop), else lse = 0
    log_s = torch.where(torch.isneginf(m), torch.where(keep, -torch.inf, 0.0), log_s)
    return loss, shift, log_s, coef, z if want_grad else None


def _forward_rows(ws: _Workspace, z: torch.Tensor, t: torch.Tensor | None, rows: _Rows,
                  w: torch.Tensor | None, scale: torch.Tensor, o: Options,
                  want_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                  torch.Tensor | None]:
    """Row losses, the saved statistics ``(shift, log_s, coef)`` and ``g`` of a chunk.

    ``lse = shift + log_s``, ``coef = A + 2 z_loss lse``; ``g`` (if wanted)
    overwrites ``z``, each row multiplied by ``scale`` (0 on ignored rows).
    Two all-reduces (MAX of one number per row, SUM of three), none without a shard.
    """
    k = _row_kernels(z, t, o)
    if k is not None:
        return _forward_rows_fused(k, z, rows, scale, o, want_grad)
    n = z.shape[0]
    shifted = o.soft or bool(o.label_smoothing)  # D_r sums over every class: needs z - m
    if shifted:
        m0 = _finite(z.amax(dim=1)) if o.local else torch.zeros(n, dtype=z.dtype, device=z.device)
        z.sub_(m0[:, None])
    big_a, big_d, a = _target_terms(z, rows, w, o, ws)
    p, m, log_s_r = _softmax_parts_(z)
    if shifted:
        m = m + m0  # the max of the logits themselves
    else:
        m0 = _finite(m)
        big_d = big_d + torch.where(big_a == 0, 0.0, big_a * m0)
    big_m = o.all_reduce(m.clone(), dist.ReduceOp.MAX)
    shift = _finite(big_m)
    big_c = torch.where(big_a == 0, 0.0, big_a * (shift - m0)) + big_d
    if o.shard is None:
        log_s = log_s_r
    else:
        buf = torch.cat([torch.exp((m - shift) + log_s_r), big_a, big_c])
        o.all_reduce(buf, dist.ReduceOp.SUM)
        log_s, big_a, big_c = torch.log(buf[:n]), buf[n:2 * n], buf[2 * n:]
    lse = shift + log_s
    keep, zl = rows.keep, o.z_loss
    loss = torch.where(keep, torch.where(big_a == 0, 0.0, big_a * log_s) + big_c + zl * lse * lse,
                       0.0)
    coef = torch.where(keep, big_a + 2.0 * zl * lse, 0.0)
    # rows of only -inf: an error if counted (raised after the loop), else lse = 0
    log_s = torch.where(torch.isneginf(big_m), torch.where(keep, -torch.inf, 0.0), log_s)
    g = None
    if want_grad:
        share = torch.exp((m - shift) + (log_s_r - log_s))  # this rank's part of the softmax
        g = _gradient_(p, t, share, rows, w, coef, scale, o, a)
    return loss, shift, log_s, coef, g


def _gradient_(p: torch.Tensor, t: torch.Tensor | None, share: torch.Tensor, rows: _Rows,
               w: torch.Tensor | None, coef: torch.Tensor, scale: torch.Tensor, o: Options,
               a: torch.Tensor | None = None) -> torch.Tensor:
    """``g = scale (share coef p - a) (1 - t^2)``, in place of ``p``."""
    e = o.label_smoothing
    g = p.mul_((scale * coef * share)[:, None])
    if o.soft:
        assert a is not None
        g.addcmul_(a, scale[:, None], value=-1.0)
    else:
        if o.local:
            assert rows.col is not None and rows.w_t is not None
            g.scatter_add_(1, rows.col[:, None], (-(1.0 - e) * scale * rows.w_t)[:, None])
        if e:
            on = torch.where(rows.keep, scale, 0.0)[:, None]
            if w is None:
                g.sub_(on, alpha=e / o.classes)
            else:
                g.addcmul_(on, w, value=-e / o.classes)
    if t is not None:  # chain rule through softcap: dz/da = 1 - t^2
        g.addcmul_(g, t.square_(), value=-1.0)
    return g


def _backward_rows(ws: _Workspace, z: torch.Tensor, t: torch.Tensor | None, rows: _Rows,
                   w: torch.Tensor | None, scale: torch.Tensor, shift: torch.Tensor,
                   log_s: torch.Tensor, coef: torch.Tensor, o: Options,
                   grad_y: torch.Tensor | None = None) -> torch.Tensor:
    """Write a chunk's gradient ``g`` in place of ``z``, from the saved row statistics.

    The statistics are ``lse = shift + log_s`` and ``coef``: no communication.
    ``grad_y`` (probability targets that require grad) receives
    ``d loss / d y = (1 - e) w (lse - z)``, scaled per row.
    """
    k = _row_kernels(z, t, o) if grad_y is None else None
    if k is not None:
        assert rows.col is not None and rows.w_t is not None  # index targets
        k.ce_index_chunk(_np(z), _np(rows.col), _np(rows.w_t.to(z.dtype)), _np(coef),
                         _np(scale), 0.0, _np(shift), _np(log_s))
        return z
    if grad_y is not None:
        d = torch.sub(shift[:, None], z, out=grad_y).add_(log_s[:, None])
        if w is not None:
            d.copy_(torch.where(w == 0, 0.0, d * w))
        d.mul_(((1.0 - o.label_smoothing) * scale)[:, None])
    a = _target_mass(ws, rows, w, o) if o.soft else None
    p, m, log_s_r = _softmax_parts_(z)
    share = torch.exp((m - shift) + (log_s_r - log_s))
    return _gradient_(p, t, share, rows, w, coef, scale, o, a)


# ----------------------------------------------------------------------------- sources and sinks


class _Workspace:
    """The ``chunk_size x V`` buffers of one pass, allocated once and reused by every chunk.

    Reusing them (rather than allocating per chunk) keeps the allocator from
    fragmenting: with fresh 30-60 MiB blocks per chunk, glibc's heap can end up
    holding two of them.
    """

    def __init__(self, rows: int, dtype: torch.dtype, device: torch.device, o: Options,
                 matmul: bool) -> None:
        cdt = compute_dtype(dtype)
        shape = (rows, o.local)
        self.z = torch.empty(shape, dtype=cdt, device=device)  # logits, then g
        self.t = torch.empty(shape, dtype=cdt, device=device) if o.softcap is not None else None
        self.low = (torch.empty(shape, dtype=dtype, device=device)
                    if matmul and dtype != cdt else None)  # matmul output, then g cast down
        self.y = (torch.empty(shape, dtype=cdt, device=device)
                  if o.soft else None)  # soft target mass
        self.softcap = o.softcap

    def capped(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(z, t)``: ``z = s tanh(a / s)`` in place of ``a``, or ``(a, None)``."""
        if self.softcap is None:
            return a, None
        assert self.t is not None
        t = torch.div(a, self.softcap, out=self.t[: a.shape[0]]).tanh_()
        return torch.mul(t, self.softcap, out=a), t

    def target(self, y_c: torch.Tensor) -> torch.Tensor:
        assert self.y is not None
        return self.y[: y_c.shape[0]].copy_(y_c)

    def input_dtype(self, g: torch.Tensor) -> torch.Tensor:
        """``g`` in the inputs' dtype (for ``g @ W``)."""
        return g if self.low is None else self.low[: g.shape[0]].copy_(g)


#: Which BLAS multiplies a chunk's matrices (the logits ``h_c @ W.T`` and ``d hidden = g @ W``)
#: for float32 / float64 CPU tensors, where a chunk's product has at least
#: ``NUMPY_BLAS_MIN_FLOPS`` flops: ``"numpy"`` (NumPy's BLAS, on views sharing the
#: tensors' memory) or ``"torch"``. ``d weight`` (``addmm_`` into the whole ``V x D``
#: buffer) always goes through torch. NumPy's BLAS is used only where ``threadpoolctl``
#: can read its thread count and it equals ``torch.get_num_threads()`` (a process
#: limited to one thread stays at one). Measured on an AMD EPYC (Zen 4), 2 threads,
#: float32, each product alone: at 171 x 2048 x 128256 NumPy's OpenBLAS ran the logits at
#: 134-148 GFLOPS and ``d hidden`` at 123-168, torch's MKL at 74-98 and 80-128 (MKL
#: reaches 176 on the naive version's 2048-row products, not on a chunk's few rows).
#: In the whole ``linear_cross_entropy`` (fwd+bwd against the naive version, alternating
#: passes in one process) that took 2048 x 2048 x 128256 from 1.22-1.24x to 0.96-1.05x;
#: at 4096 x 1024 x 32000 (products of 2.2e10 flops) NumPy's BLAS lost (1.09-1.10x
#: against 1.02-1.04x), as at smaller shapes: handing the cores from one thread pool to
#: another between products costs more than it gains there.
CPU_MATMUL = "numpy"
#: See ``CPU_MATMUL``: smaller chunk products stay with torch's BLAS (171 x 2048 x 128256:
#: 9.0e10 flops).
NUMPY_BLAS_MIN_FLOPS = 2**36

_blas_pools: list[Any] | None = None  # NumPy's BLAS libraries (threadpoolctl), found once


def _numpy_blas_threads() -> set[int]:
    """The thread counts of the BLAS libraries loaded in this process (empty if unknown)."""
    global _blas_pools
    if _blas_pools is None:
        try:
            from threadpoolctl import ThreadpoolController

            _blas_pools = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception:  # noqa: BLE001 - not installed, or no library it can read: torch's BLAS
            _blas_pools = []
    return {lib.get_num_threads() for lib in _blas_pools}


def _numpy_blas(flops: float, *xs: torch.Tensor | None) -> bool:
    """Whether NumPy's BLAS (on :func:`_np_view` views) is to multiply ``xs``; else torch's.

    See ``CPU_MATMUL``: products of at least ``NUMPY_BLAS_MIN_FLOPS`` ``flops``
    on plain float32 / float64 CPU tensors of one dtype (not under ``torch.func``
    or ``torch.compile``, no lazy negation), NumPy's BLAS on as many threads as torch.
    """
    ts = [x for x in xs if x is not None]
    if CPU_MATMUL != "numpy" or flops < NUMPY_BLAS_MIN_FLOPS or any(
            x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64)
            or x.dtype != ts[0].dtype or x.layout != torch.strided or x.is_neg() or x.is_conj()
            or torch_transformed(x) for x in ts):
        return False
    return _numpy_blas_threads() == {torch.get_num_threads()}


def _np_view(x: torch.Tensor) -> Any:
    """A NumPy view (shared memory, same strides) of a CPU tensor."""
    return x.detach().numpy()


class _Linear:
    """Source and sink of ``hidden @ weight.T + bias``."""

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 needs: tuple[bool, ...], o: Options) -> None:
        self.hidden, self.weight, self.bias, self.o = hidden, weight, bias, o
        cdt = compute_dtype(hidden.dtype)
        new = torch.zeros if hidden.shape[0] == 0 else torch.empty  # else the first chunk writes
        self.grads = (
            torch.empty_like(hidden) if needs[0] else None,
            new(weight.shape, dtype=cdt, device=weight.device) if needs[1] else None,
            new(weight.shape[0], dtype=cdt, device=weight.device) if needs[2] else None,
        )

    def logits(self, ws: _Workspace, rows: slice) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The chunk's logits ``h_c @ W.T + b``, a block of ``LOGITS_BLOCK_BYTES`` at a time.

        Blocks of vocabulary columns, each written in place into its columns
        of the workspace: with a single call of a few rows by the whole
        vocabulary, MKL computes into a scratch as large as the chunk's
        logits (its working memory doubled); per block the scratch is a block.
        By NumPy's BLAS or torch's (``CPU_MATMUL``); NumPy adds the bias to
        each block after its product.
        """
        h_c = self.hidden[rows]
        n = h_c.shape[0]
        out = ws.z[:n] if ws.low is None else ws.low[:n]
        width = out.shape[1]
        block = max(1, LOGITS_BLOCK_BYTES // max(1, n * out.element_size()))
        if self._numpy_blas(n):  # float32 / float64: no low-precision buffer
            h_n, w_n, o_n = _np_view(h_c), _np_view(self.weight), _np_view(out)
            b_n = None if self.bias is None else _np_view(self.bias)
            for lo in range(0, width, block):
                hi = min(width, lo + block)
                np.matmul(h_n, w_n[lo:hi].T, out=o_n[:, lo:hi])
                if b_n is not None:
                    np.add(o_n[:, lo:hi], b_n[lo:hi], out=o_n[:, lo:hi])
            return ws.capped(out)
        for lo in range(0, width, block):
            cols = slice(lo, min(width, lo + block))
            w_b = self.weight[cols].t()
            if self.bias is None:
                torch.mm(h_c, w_b, out=out[:, cols])
            else:
                torch.addmm(self.bias[cols], h_c, w_b, out=out[:, cols])
        return ws.capped(out if ws.low is None else ws.z[:n].copy_(out))

    def _numpy_blas(self, n: int) -> bool:
        """Whether NumPy's BLAS multiplies a chunk of ``n`` rows (else torch's)."""
        flops = 2.0 * n * self.weight.shape[0] * self.weight.shape[1]
        return _numpy_blas(flops, self.hidden, self.weight, self.bias)

    def add(self, ws: _Workspace, g: torch.Tensor, rows: slice) -> None:
        """Add one chunk's contribution to d hidden (its rows), d weight and d bias.

        The first chunk writes ``d weight`` and ``d bias`` (their buffers start
        uninitialised, sparing a pass of zeros over ``V x D``); later chunks add.
        """
        grad_h, grad_w, grad_b = self.grads
        h_c = self.hidden[rows]
        first = rows.start == 0
        if grad_h is not None:
            if self._numpy_blas(g.shape[0]):
                np.matmul(_np_view(g), _np_view(self.weight), out=_np_view(grad_h)[rows])
            else:
                torch.mm(ws.input_dtype(g), self.weight, out=grad_h[rows])
        if grad_w is not None:
            if first:
                torch.mm(g.t(), h_c.to(grad_w.dtype), out=grad_w)
            else:
                grad_w.addmm_(g.t(), h_c.to(grad_w.dtype))
        if grad_b is not None:
            if first:
                torch.sum(g, dim=0, out=grad_b)
            else:
                grad_b.add_(g.sum(dim=0))

    def finish(self, go: torch.Tensor | None,
               dtypes: list[torch.dtype | None]) -> list[torch.Tensor | None]:
        """The gradients scaled by ``go`` (in place), ``d hidden`` summed over ranks."""
        if self.grads[0] is not None:
            self.o.all_reduce(self.grads[0], dist.ReduceOp.SUM)
        return _scaled(self.grads, go, dtypes)


class _Logits:
    """Source and sink of given logits ``(rows, local)``."""

    def __init__(self, z: torch.Tensor, needs: tuple[bool, ...], o: Options) -> None:
        self.z = z
        self.grads = (torch.empty_like(z) if needs[0] else None,)

    def logits(self, ws: _Workspace, rows: slice) -> tuple[torch.Tensor, torch.Tensor | None]:
        z_c = self.z[rows]
        return ws.capped(ws.z[: z_c.shape[0]].copy_(z_c))

    def add(self, ws: _Workspace, g: torch.Tensor, rows: slice) -> None:
        if self.grads[0] is not None:
            self.grads[0][rows] = g

    def finish(self, go: torch.Tensor | None,
               dtypes: list[torch.dtype | None]) -> list[torch.Tensor | None]:
        return _scaled(self.grads, go, dtypes)


def _chunks(io: _Linear | _Logits, ws: _Workspace, n_rows: int,
            chunk_size: int) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor | None]]:
    """The chunk loop: ``(rows, z, t)`` for each chunk of rows, its logits in ``ws``.

    The ``ceil(n_rows / chunk_size)`` chunks are balanced, the larger first
    (2048 rows by 171: 171 x 8, then 170 x 4, not 171 x 11 and 167): a last
    chunk of another shape made the matmuls' scratch allocations grow the
    heap by 16 MiB at 2048 x 2048 x 128256 (issue 13's working-memory target).
    """
    count = -(-n_rows // chunk_size)
    start = 0
    for i in range(count):
        size = n_rows // count + (i < n_rows % count)
        rows = slice(start, start + size)
        start += size
        yield rows, *io.logits(ws, rows)


def _scaled(grads: tuple[torch.Tensor | None, ...], go: torch.Tensor | None,
            dtypes: list[torch.dtype | None]) -> list[torch.Tensor | None]:
    out: list[torch.Tensor | None] = []
    for g_x, dtype in zip(grads, dtypes, strict=True):
        if g_x is None:
            out.append(None)
        elif g_x.dtype == dtype:
            out.append(g_x if go is None else g_x.mul_(go))
        else:
            out.append((g_x if go is None else g_x.mul_(go)).to(dtype))
    return out


def _targets(target: Any, w: torch.Tensor | None, o: Options, n_rows: int, device: torch.device,
             cdt: torch.dtype) -> _Rows:
    """The targets as the row math reads them (local: no communication)."""
    if o.soft:
        return _Rows(keep=torch.ones(n_rows, dtype=torch.bool, device=device), y=target)
    target = target.long()
    keep = target != o.ignore_index
    col = target - o.start
    here = keep & (col >= 0) & (col < o.local)
    col = torch.where(here, col, 0)
    if w is None:
        w_t = here.to(cdt)
    else:
        w_t = torch.where(here, w[col] if o.local else 0.0, 0.0).to(cdt)
    return _Rows(keep=keep, col=col, w_t=w_t)


def _inverse_denominator(rows: _Rows, o: Options, device: torch.device,
                         cdt: torch.dtype) -> torch.Tensor:
    """``1 / denominator`` of the reduction (0 for a mean over nothing).

    The mean's denominator is the summed target weight of the counted rows
    (their count without class weights) for index targets, the row count for
    probabilities. One all-reduce of one number, sent whatever the options so
    that every call puts the same bytes on the wire.
    """
    mine = rows.w_t.sum() if rows.w_t is not None else torch.zeros((), dtype=cdt, device=device)
    count = o.all_reduce(mine.reshape(1), dist.ReduceOp.SUM)[0]
    if o.soft:
        count = torch.tensor(float(rows.keep.shape[0]), dtype=cdt, device=device)
    if o.reduction != "mean":
        return torch.ones((), dtype=cdt, device=device)
    if o.divisor is not None:
        return torch.tensor(1.0 / o.divisor, dtype=cdt, device=device)
    return torch.where(count == 0, 0.0, 1.0 / torch.where(count == 0, 1.0, count))


def chunked_loss(o: Options, target: torch.Tensor, w: torch.Tensor | None,
                 *inputs: torch.Tensor | None) -> torch.Tensor:
    """The chunked loss of ``inputs`` (``(hidden, weight, bias)`` or ``(logits,)``)."""
    grad_on = torch.is_grad_enabled()
    needs = tuple(grad_on and x is not None and x.requires_grad for x in inputs)
    out = ChunkedCrossEntropy.apply(o, needs, target, w, *inputs)  # type: ignore[no-untyped-call]
    return cast(torch.Tensor, out[0])


class ChunkedCrossEntropy(torch.autograd.Function):
    """The chunked loss as one autograd Function, in the ``setup_context`` form.

    ``apply(o, needs, target, class_weight, *inputs)``: ``inputs`` are
    ``(hidden, weight, bias)`` (the linear form) or ``(logits,)``, ``needs``
    which of them autograd will want a gradient for. Returns the reduced loss
    or the row losses, then what the backward needs (non-differentiable): the
    row statistics, ``1 / denominator`` and, in eager mode, the gradients
    computed chunk by chunk (those in ``needs``).
    """

    @staticmethod
    def forward(o: Options, needs: tuple[bool, ...], target: torch.Tensor,
                w: torch.Tensor | None, *inputs: Any) -> tuple[torch.Tensor, ...]:
        linear = len(inputs) == 3
        x = inputs[0]
        n_rows, cdt, device = x.shape[0], compute_dtype(x.dtype), x.device
        wc = None if w is None else w.to(cdt)
        rows = _targets(target, wc, o, n_rows, device, cdt)
        inv = _inverse_denominator(rows, o, device, cdt)
        eager = o.mode == EAGER and any(needs)
        scale = rows.keep.to(cdt) * inv
        io = (_Linear(inputs[0], inputs[1], inputs[2], needs, o) if linear
              else _Logits(x, needs if eager else (False,), o))
        loss_rows = torch.empty(n_rows, dtype=cdt, device=device)
        shift, log_s, coef = (torch.empty(n_rows, dtype=cdt, device=device) for _ in range(3))
        ws = _Workspace(min(o.chunk_size, n_rows), x.dtype, device, o, matmul=linear)
        for sl, z, t in _chunks(io, ws, n_rows, o.chunk_size):
            loss_rows[sl], shift[sl], log_s[sl], coef[sl], g = _forward_rows(
                ws, z, t, rows[sl], wc, scale[sl], o, want_grad=eager)
            if eager:
                assert g is not None
                io.add(ws, g, sl)
        _validate.some_finite_logit(namespace(x, "logits")[0], log_s, rows.keep)
        if o.reduction == "none":
            loss = loss_rows.to(x.dtype)
        else:
            loss = (loss_rows.sum() * inv).to(x.dtype)
        grads = [g for g in io.grads if g is not None] if eager else []
        return (loss, shift, log_s, coef, inv, *grads)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        o, needs, target, w, *xs = inputs
        _, shift, log_s, coef, inv, *grads = output
        ctx.mark_non_differentiable(shift, log_s, coef, inv, *grads)
        ctx.set_materialize_grads(False)  # no zeros for those outputs' (absent) gradients
        ctx.o, ctx.linear = o, len(xs) == 3
        ctx.eager = None
        if grads:  # one per input in ``needs``, in order
            left = iter(grads)
            ctx.eager = tuple(next(left) if n else None for n in needs)
        ctx.save_for_backward(target, w, shift, log_s, coef, inv, *xs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        refuse_second_order()
        o: Options = ctx.o
        target, w, shift, log_s, coef, inv, *inputs = ctx.saved_tensors
        if grad_out is None:  # only the statistics got a gradient (gradcheck): none flows back
            return (None,) * (4 + len(inputs))
        x = inputs[0]
        dtypes = [None if t is None else t.dtype for t in inputs]
        want = ctx.needs_input_grad[4:]
        cdt = compute_dtype(x.dtype)
        if ctx.eager is not None:
            # Gradients of the loss were computed in forward: scale by grad_out and hand
            # the buffers over (dropping our reference, so autograd need not copy them).
            grads, ctx.eager = ctx.eager, None
            if ctx.linear and grads[0] is not None:  # d hidden: every rank's classes feed it
                o.all_reduce(grads[0], dist.ReduceOp.SUM)
            grads = _scaled(grads, grad_out.to(cdt), dtypes)
            grads = [g if wanted else None for g, wanted in zip(grads, want, strict=True)]
            return None, None, None, None, *grads
        # Recompute: a second pass over the chunks, logits rebuilt from the inputs.
        n_rows, device = x.shape[0], x.device
        wc = None if w is None else w.to(cdt)
        rows = _targets(target, wc, o, n_rows, device, cdt)
        scale = rows.keep.to(cdt) * inv * grad_out.to(cdt)
        needs = tuple(bool(a) and t is not None for a, t in zip(want, inputs, strict=True))
        linear = ctx.linear
        io = (_Linear(inputs[0], inputs[1], inputs[2], needs, o) if linear
              else _Logits(x, needs, o))
        grad_y = (torch.empty(target.shape, dtype=cdt, device=device)
                  if o.soft and ctx.needs_input_grad[2] else None)
        ws = _Workspace(min(o.chunk_size, n_rows), x.dtype, device, o, matmul=linear)
        for sl, z, t in _chunks(io, ws, n_rows, o.chunk_size):
            g = _backward_rows(ws, z, t, rows[sl], wc, scale[sl], shift[sl], log_s[sl], coef[sl], o,
                               None if grad_y is None else grad_y[sl])
            io.add(ws, g, sl)
        grads = io.finish(None, dtypes)
        grad_y = None if grad_y is None else grad_y.to(target.dtype)
        return None, None, grad_y, None, *grads
