"""Vocab-parallel cross-entropy over ``torch.distributed`` (tensor parallelism).

When the output layer is too large for one device, each rank of a process
group keeps a contiguous slice of the classes (Megatron-LM's vocab-parallel
head): rank ``r`` holds the logits ``z[:, start_r : start_r + V_r]``, slices in
rank order, sizes free (``V`` need not divide by the world size). A row's loss
needs only a few per-row numbers from every rank. With ``a_c`` the row's
(weighted, smoothed) target mass on class ``c``:

- index target ``t``, class weights ``w``, smoothing ``e`` (PyTorch's rule):
  ``a_c = (1 - e) w_t [c == t] + (e / V) w_c``, ``V`` the *global* class count;
- probability target ``y``: ``a_c = w_c ((1 - e) y_c + e / V)``;

and ``m_r`` the rank's max logit, ``M = max_r m_r``, ``s_r = sum exp(z - m_r)``
over the rank's classes:

    lse  = M + log s,        s = sum_r s_r exp(m_r - M)
    loss = A log s + sum_r [A_r (M - m_r) + D_r] + z_loss lse**2
    A_r  = sum_c a_c,        D_r = sum_c a_c (m_r - z_c)      (sums over rank r's classes)

Every term is non-negative, so nothing cancels: float32 is as accurate as
``torch.nn.functional.cross_entropy`` whatever the logits' offset (``A lse -
sum a z`` would lose three digits at an offset of 1000). A call sends, per
rank, one all-gather of 3 integers (shard size, row count, error flag:
O(world) numbers), one all-reduce MAX of the ``N`` local maxima and one
all-reduce SUM of ``3 N + 1`` numbers (``s_r exp(m_r - M)``, ``A_r``, the
bracket, the mean's denominator). The logits never leave their rank.

The gradient is local and needs no communication:

    dloss / dz_c = (A + 2 z_loss lse) softmax(z)_c - a_c,   softmax(z)_c = exp(z_c - M - log s)

so the backward saves three numbers per row (``M``, ``log s`` and
``A + 2 z_loss lse``) next to the inputs it already references.

Vocabulary follows ``_numerics``: ``z`` logits as rows, ``y`` target, ``m``
row max, ``lse`` row log-sum-exp, ``g`` gradient, ``denom`` the mean's divisor.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from crossentropy import _validate as V
from crossentropy._backend import Namespace, namespace
from crossentropy._docs import PARAMS

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"]

_HALF = (torch.float16, torch.bfloat16)
# Default number of logits (rows x local classes) per chunk of the linear form.
_CHUNK_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------
# Collectives: every byte this module puts on the wire goes through these two.


@dataclass(frozen=True)
class _Group:
    """The process group of one call: ``handle`` is None for a world of one."""

    handle: Any
    rank: int
    world: int


def _resolve_group(group: Any) -> _Group:
    if dist.is_available() and dist.is_initialized():
        return _Group(group, dist.get_rank(group), dist.get_world_size(group))
    if group is not None:
        raise ValueError(
            "group: expected None when no default process group is initialized "
            f"(call torch.distributed.init_process_group first), got {group!r}"
        )
    return _Group(None, 0, 1)


def _all_reduce(tensor: torch.Tensor, op: Any, group: _Group) -> torch.Tensor:
    """In-place all-reduce of ``tensor`` over the group (a no-op for a world of one)."""
    if group.world > 1:
        dist.all_reduce(tensor, op=op, group=group.handle)
    return tensor


def _all_gather(tensor: torch.Tensor, group: _Group) -> torch.Tensor:
    """Stack every rank's ``tensor`` (same shape everywhere) in rank order."""
    if group.world == 1:
        return tensor.unsqueeze(0)
    parts = [torch.empty_like(tensor) for _ in range(group.world)]
    dist.all_gather(parts, tensor, group=group.handle)
    return torch.stack(parts)


# --------------------------------------------------------------------------
# Checks (local, then made collective by the handshake so no rank hangs).


@dataclass(frozen=True)
class _Spec:
    """Options of one call, fixed before the autograd Function runs."""

    group: _Group
    ns: Namespace
    soft: bool  # probability targets (else class indices)
    start: int  # this rank's first global class
    local: int  # this rank's number of classes
    classes: int  # global number of classes V
    ignore_index: int
    label_smoothing: float
    z_loss: float
    softcap: float | None = None
    chunk_size: int = 0


def _tensor(name: str, t: Any) -> Namespace:
    """A floating torch tensor; returns its namespace (dtype policy) from the core."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    return namespace(t, name)[0]


def _options(label_smoothing, reduction, divisor, z_loss, ignore_index) -> None:
    V.ignore_index(ignore_index)
    V.label_smoothing(label_smoothing)
    V.reduction(reduction)
    V.divisor(divisor)
    V.non_negative_number(z_loss, "z_loss")


def _exchange(name: str, group: _Group, device, checks) -> tuple[Any, int, int]:
    """Run this rank's ``checks()``, then swap (classes, rows, error flag) with every rank.

    ``checks`` returns ``(local classes, rows, anything)``. Every rank joins the
    all-gather even when its own checks failed, so all ranks raise together
    instead of leaving the others blocked in a later collective. Returns
    ``(anything, start, V)``: this rank's first global class and the global
    class count.
    """
    try:
        local, rows, checked = checks()
        error = None
    except (TypeError, ValueError, IndexError) as exc:
        local, rows, checked, error = -1, -1, None, exc
    mine = torch.tensor([local, rows, error is not None], dtype=torch.int64, device=device)
    table = _all_gather(mine, group).tolist()
    if error is not None:
        raise error
    failed = [r for r, (_, _, bad) in enumerate(table) if bad]
    if failed:
        raise ValueError(
            f"{name}: rank(s) {failed} rejected their input (the error is raised there too); "
            f"this is rank {group.rank}"
        )
    if len({n for _, n, _ in table}) > 1:
        raise ValueError(
            f"{name}: expected the same number of rows on every rank, got "
            f"{[n for _, n, _ in table]} (in rank order)"
        )
    sizes = [v for v, _, _ in table]
    return checked, sum(sizes[: group.rank]), sum(sizes)


# --------------------------------------------------------------------------
# Numerics: per-row partial sums on a block of local logits, their combination
# across ranks, and the local gradient.


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _HALF else dtype


def _safe_mul(a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``a * z`` with ``0 * (+-inf) = 0`` (no target mass on a masked class costs nothing)."""
    return torch.where(a == 0, torch.zeros((), dtype=z.dtype, device=z.device), a * z)


def _soft_mass(y: torch.Tensor, w: torch.Tensor | None, spec: _Spec) -> torch.Tensor:
    """``a = w * ((1 - e) y + e / V)`` on this rank's classes, shape (rows, local)."""
    e = spec.label_smoothing
    a = y * (1.0 - e) + e / spec.classes if e else y
    return a * w if w is not None else a


def _index_parts(y: torch.Tensor, w: torch.Tensor | None, spec: _Spec, dtype: torch.dtype):
    """For index targets: counted rows, the local column of the target (0 if
    elsewhere) and the target's class weight on this rank (0 if elsewhere)."""
    counted = y != spec.ignore_index
    col = y - spec.start
    mine = counted & (col >= 0) & (col < spec.local)
    col = torch.where(mine, col, torch.zeros_like(col))
    if w is None:
        w_t = mine.to(dtype)
    else:
        w_t = torch.where(mine, w[col] if spec.local else 0.0, 0.0).to(dtype)
    return counted, col, w_t


def _row_sums(z, y, w, spec: _Spec, scratch: bool = False):
    """This rank's per-row numbers for a block of rows: (m, s, A, D, w_t).

    ``m`` the local max logit (``-inf`` for a row of ``-inf``), ``s = sum exp(z - m)``,
    ``A = sum a``, ``D = sum a (m - z)`` (non-negative terms: no cancellation),
    ``w_t`` the target class weight for index targets whose class lives here
    (its sum over ranks is the mean's denominator), zeros for probability
    targets. ``z`` (rows, local) is in the compute dtype, overwritten if
    ``scratch``.
    """
    e = spec.label_smoothing
    if spec.local:
        m = z.amax(dim=1)
    else:
        m = torch.full(z.shape[:1], -math.inf, dtype=z.dtype, device=z.device)
    m0 = torch.where(torch.isneginf(m), 0.0, m)
    d = z.sub_(m0.unsqueeze(1)) if scratch else torch.sub(z, m0.unsqueeze(1))  # z - m <= 0
    if spec.soft:
        a = _soft_mass(y, w, spec)
        big_a, big_d = a.sum(1), -_safe_mul(a, d).sum(1)
        w_t = torch.zeros_like(big_a)
    else:
        counted, col, w_t = _index_parts(y, w, spec, z.dtype)
        d_t = d.gather(1, col.unsqueeze(1)).squeeze(1) if spec.local else torch.zeros_like(w_t)
        big_a = w_t * (1.0 - e)
        big_d = -_safe_mul(big_a, d_t)
        if e:
            on = counted.to(z.dtype) * (e / spec.classes)
            big_a = big_a + on * (float(spec.local) if w is None else w.sum())
            d_sum = d.sum(1) if w is None else _safe_mul(w, d).sum(1)
            big_d = big_d - torch.where(counted, on * d_sum, 0.0)  # -inf on ignored rows
    return m, d.exp_().sum(dim=1), big_a, big_d, w_t


def _combine(m, s, big_a, big_d, w_t, counted, spec: _Spec):
    """Combine the ranks' row numbers: (row losses, shift, log-sum, coef, denominator).

    Wire: all-reduce MAX of the ``N`` local maxima, then SUM of ``3 N + 1``
    numbers. With ``M`` the global max, ``lse = M + log sum_r s_r exp(m_r - M)``
    and the row loss ``A (lse - M) + sum_r [A_r (M - m_r) + D_r] + z_loss lse**2``
    is a sum of non-negative terms, accurate in float32 whatever the logits'
    offset. ``shift`` and ``log-sum`` (``M`` and ``lse - M``) are what the
    gradient needs.
    """
    n = m.shape[0]
    big_m = _all_reduce(m.clone(), dist.ReduceOp.MAX, spec.group)
    big_m = torch.where(torch.isneginf(big_m), 0.0, big_m)
    m0 = torch.where(torch.isneginf(m), 0.0, m)
    big_c = _safe_mul(big_a, big_m - m0) + big_d
    buf = torch.cat([s * torch.exp(m - big_m), big_a, big_c, w_t.sum().reshape(1)])
    _all_reduce(buf, dist.ReduceOp.SUM, spec.group)
    log_s = torch.log(buf[:n])
    big_a, big_c, denom = buf[n : 2 * n], buf[2 * n : 3 * n], buf[3 * n]
    lse = big_m + log_s
    V.some_finite_logit(spec.ns, lse, counted)  # the same on every rank: lse is global
    zl = spec.z_loss
    rows = torch.where(counted, _safe_mul(big_a, log_s) + big_c + zl * lse * lse, 0.0)
    coef = torch.where(counted, big_a + 2.0 * zl * lse, 0.0)
    log_s = torch.where(torch.isneginf(log_s), 0.0, log_s)  # ignored rows of -inf
    if spec.soft:
        denom = torch.full((), float(n), dtype=lse.dtype, device=lse.device)
    return rows, big_m, log_s, coef, denom


def _grad_block(z, y, w, shift, log_s, coef, g_rows, spec: _Spec, out=None) -> torch.Tensor:
    """``g_rows * ((A + 2 z_loss lse) softmax(z) - a)`` for a block of local logits.

    ``softmax(z) = exp((z - shift) - log_s)``. ``out`` (may be ``z`` itself)
    receives the result; no ``N x V`` temporary except for weighted
    probability targets.
    """
    e = spec.label_smoothing
    uniform = e / spec.classes
    g = torch.sub(z, shift.unsqueeze(1), out=out).sub_(log_s.unsqueeze(1)).exp_()
    g.mul_((coef * g_rows).unsqueeze(1))
    g_col = g_rows.unsqueeze(1)
    if spec.soft:  # g -= g_rows w ((1 - e) y + e / V)
        g.addcmul_(y if w is None else y * w, g_col, value=e - 1.0)
        if e:
            if w is None:
                g.sub_(g_col, alpha=uniform)
            else:
                g.addcmul_(g_col, w, value=-uniform)
        return g
    counted, col, w_t = _index_parts(y, w, spec, z.dtype)
    if e:  # the uniform part, on counted rows only
        rows = torch.where(counted, g_rows, 0.0).unsqueeze(1)
        if w is None:
            g.sub_(rows, alpha=uniform)
        else:
            g.addcmul_(rows, w, value=-uniform)
    if spec.local:  # the target's own part, on the rank that holds it
        g.scatter_add_(1, col.unsqueeze(1), (w_t * g_rows * (e - 1.0)).unsqueeze(1))
    return g


def _target_grad_block(z, w, shift, log_s, g_rows, spec: _Spec) -> torch.Tensor:
    """``d loss / d y = (1 - e) w (lse - z)`` for probability targets."""
    d = torch.sub(shift.unsqueeze(1), z).add_(log_s.unsqueeze(1))
    if w is not None:
        d = _safe_mul(w, d)
    return d.mul_((g_rows * (1.0 - spec.label_smoothing)).unsqueeze(1))


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Row losses of sharded logits; backward is the analytic local gradient."""

    @staticmethod
    def forward(ctx, z, y, w, spec: _Spec):
        zc = z.to(_compute_dtype(z.dtype))
        yc = y.to(zc.dtype) if spec.soft else y
        wc = None if w is None else w.to(zc.dtype)
        counted = (
            torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
            if spec.soft
            else y != spec.ignore_index
        )
        sums = _row_sums(zc, yc, wc, spec, scratch=zc is not z)  # scratch: a private copy
        rows, shift, log_s, coef, denom = _combine(*sums, counted, spec)
        ctx.save_for_backward(z, y, w, shift, log_s, coef)
        ctx.spec = spec
        ctx.mark_non_differentiable(denom)
        return rows, denom

    @staticmethod
    def backward(ctx, g_rows, _g_denom):
        z, y, w, shift, log_s, coef = ctx.saved_tensors
        spec = ctx.spec
        zc = z.to(_compute_dtype(z.dtype))
        yc = y.to(zc.dtype) if spec.soft else y
        wc = None if w is None else w.to(zc.dtype)
        g_rows = g_rows.to(zc.dtype)
        gy = None
        if spec.soft and ctx.needs_input_grad[1]:
            gy = _target_grad_block(zc, wc, shift, log_s, g_rows, spec).to(y.dtype)
        own = zc if zc is not z else None  # a private upcast copy can take the gradient
        gz = _grad_block(zc, yc, wc, shift, log_s, coef, g_rows, spec, out=own).to(z.dtype)
        return gz, gy, None, None


class _VocabParallelLinearCrossEntropy(torch.autograd.Function):
    """Row losses of ``hidden @ weight_shard.T + bias_shard``, in token chunks.

    Forward and backward each recompute the local logits one chunk of rows at
    a time; nothing of size ``N x V_local`` is kept between them.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, y, spec: _Spec):
        n = h.shape[0]
        dtype = _compute_dtype(h.dtype)
        parts = [torch.empty(n, dtype=dtype, device=h.device) for _ in range(5)]
        for lo in range(0, n, spec.chunk_size):
            hi = min(n, lo + spec.chunk_size)
            z = _linear_logits(h[lo:hi], weight, bias, spec)
            yc = y[lo:hi].to(dtype) if spec.soft else y[lo:hi]
            for out, part in zip(parts, _row_sums(z, yc, None, spec, scratch=True), strict=True):
                out[lo:hi] = part
        counted = (
            torch.ones(n, dtype=torch.bool, device=h.device)
            if spec.soft
            else (y != spec.ignore_index)
        )
        rows, shift, log_s, coef, denom = _combine(*parts, counted, spec)
        ctx.save_for_backward(h, weight, bias, y, shift, log_s, coef)
        ctx.spec = spec
        ctx.mark_non_differentiable(denom)
        return rows, denom

    @staticmethod
    def backward(ctx, g_rows, _g_denom):
        h, weight, bias, y, shift, log_s, coef = ctx.saved_tensors
        spec = ctx.spec
        need_h, need_w, need_b, need_y = ctx.needs_input_grad[:4]
        dtype = _compute_dtype(h.dtype)
        g_rows = g_rows.to(dtype)
        gh = torch.zeros(h.shape, dtype=dtype, device=h.device) if need_h else None
        gw = torch.zeros(weight.shape, dtype=dtype, device=h.device) if need_w else None
        gb = torch.zeros(spec.local, dtype=dtype, device=h.device) if need_b else None
        gy = torch.zeros(y.shape, dtype=dtype, device=h.device) if need_y and spec.soft else None
        w_c = weight.to(dtype)
        for lo in range(0, h.shape[0], spec.chunk_size):
            hi = min(h.shape[0], lo + spec.chunk_size)
            z = _linear_logits(h[lo:hi], weight, bias, spec)
            yc = y[lo:hi].to(dtype) if spec.soft else y[lo:hi]
            if gy is not None:
                gy[lo:hi] = _target_grad_block(
                    z, None, shift[lo:hi], log_s[lo:hi], g_rows[lo:hi], spec
                )
            cap = None
            if spec.softcap is not None:  # z = c tanh(x / c): dz/dx = 1 - (z / c)^2
                cap = 1.0 - (z / spec.softcap) ** 2
            g = _grad_block(
                z, yc, None, shift[lo:hi], log_s[lo:hi], coef[lo:hi], g_rows[lo:hi], spec, out=z
            )
            if cap is not None:
                g.mul_(cap)
            if gh is not None:
                gh[lo:hi] = g @ w_c
            if gw is not None:
                gw.addmm_(g.T, h[lo:hi].to(dtype))
            if gb is not None:
                gb.add_(g.sum(0))
        if gh is not None:  # every rank's classes feed every row: O(N x D) on the wire
            _all_reduce(gh, dist.ReduceOp.SUM, spec.group)
        return (
            None if gh is None else gh.to(h.dtype),
            None if gw is None else gw.to(weight.dtype),
            None if gb is None else gb.to(bias.dtype),
            None if gy is None else gy.to(y.dtype),
            None,
        )


def _linear_logits(h, weight, bias, spec: _Spec) -> torch.Tensor:
    """One chunk of local logits in the compute dtype, soft-capped if asked."""
    z = h @ weight.T if bias is None else torch.addmm(bias, h, weight.T)
    z = z.to(_compute_dtype(z.dtype))
    if spec.softcap is not None:
        z = torch.tanh(z / spec.softcap).mul_(spec.softcap)
    return z


def _reduce(rows, denom, reduction, divisor, out_shape, dtype):
    if reduction == "none":
        return rows.reshape(out_shape).to(dtype)
    total = rows.sum()
    if reduction == "sum":
        return total.to(dtype)
    if divisor is not None:
        denom = torch.full((), float(divisor), dtype=total.dtype, device=total.device)
    empty = denom == 0  # nothing counted: 0, with a zero gradient
    one = torch.ones((), dtype=total.dtype, device=total.device)
    return torch.where(empty, 0.0 * one, total / torch.where(empty, one, denom)).to(dtype)


# --------------------------------------------------------------------------
# Public functions.

# Parameter texts shared by both functions (the core's ``_docs.fill`` substitutes them).
_PARAMS = {
    **PARAMS,
    "group": """group : torch.distributed.ProcessGroup, optional
        The group over which the classes are sharded (default: the world).
        With no process group initialized and ``group=None``, runs as a world
        of one.""",
    "label_smoothing": """label_smoothing : float in [0, 1], default 0.0
        The target becomes ``(1 - e) y + e / V`` with ``V`` the *global* class
        count; with ``weight`` and ``ignore_index`` exactly as
        ``torch.nn.functional.cross_entropy`` on the gathered logits.""",
    "z_loss": """z_loss : float, default 0.0
        Adds ``z_loss * lse**2`` to the loss of every counted row (PaLM's
        auxiliary loss); the reduction divides it like the rest of the row's
        loss.""",
}


def _fill(func):
    func.__doc__ = func.__doc__ % _PARAMS
    return func


@_fill
def vocab_parallel_cross_entropy(
    logits_shard: torch.Tensor,
    target: torch.Tensor,
    *,
    group: Any = None,
    axis: int = -1,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    divisor: float | None = None,
    z_loss: float = 0.0,
) -> torch.Tensor:
    """Softmax cross-entropy of logits whose classes are sharded across ranks.

    Rank ``r`` of ``group`` holds the contiguous slice of classes
    ``[start_r, start_r + V_r)``, slices in rank order, sizes free (``V`` need
    not divide by the world size). The result and the gradient equal
    ``crossentropy.cross_entropy`` (and ``torch.nn.functional.cross_entropy``)
    on the logits gathered along ``axis``, while each rank sends only ``O(N)``
    numbers: an all-reduce MAX of the ``N`` local max logits, one all-reduce
    SUM of ``3 N + 1`` numbers (sum of exp, target mass, the rank's part of
    the loss, the mean's denominator), and an all-gather of 3 integers (the
    slice sizes); see the module docstring for the formulas. The backward is
    the analytic
    ``(A + 2 z_loss lse) softmax(z) - a`` on the rank's own slice and
    communicates nothing.

    Every rank calls this with the same options and the same number of rows;
    a bad input on one rank makes every rank raise, none is left waiting.

    Parameters
    ----------
    logits_shard : torch.Tensor of shape (..., V_r, ...)
        This rank's slice of the class axis ``axis``; float16 and bfloat16
        are computed in float32.
    target : torch.Tensor
        Integer dtype: global class ids, the same on every rank, of the
        logits' shape without ``axis``. Floating dtype: this rank's slice of
        each row's probabilities, of ``logits_shard``'s shape.
    %(group)s
    %(axis)s
    weight : torch.Tensor of shape (V_r,), optional
        This rank's slice of the non-negative per-class weights (a constant,
        no gradient). With index targets, ``"mean"`` divides by the summed
        weight of the counted rows' target classes, as PyTorch.
    %(ignore_index)s
    %(label_smoothing)s
    %(reduction)s
    %(divisor)s
    %(z_loss)s

    Returns
    -------
    torch.Tensor
        0-d for ``"mean"`` and ``"sum"``, else the logits' shape without
        ``axis``; in the logits' dtype, the same on every rank.

    Examples
    --------
    A world of one (no process group) needs no launcher:

    >>> import torch
    >>> from crossentropy.torch.distributed import vocab_parallel_cross_entropy
    >>> z = torch.tensor([[2.0, 1.0, 0.1]], requires_grad=True)
    >>> loss = vocab_parallel_cross_entropy(z, torch.tensor([0]))
    >>> round(loss.item(), 4)
    0.417
    >>> loss.backward(); z.grad
    tensor([[-0.3410,  0.2424,  0.0986]])

    On two ranks started by ``torchrun --nproc-per-node 2``, each passes its
    half: ``vocab_parallel_cross_entropy(z[:, lo:hi], target)``.

    PyTorch (unsharded):
    ``torch.nn.functional.cross_entropy(torch.cat(shards, dim=axis), target)``.

    References
    ----------
    Shoeybi et al., "Megatron-LM: Training Multi-Billion Parameter Language
    Models Using Model Parallelism", 2019 (the vocab-parallel head).
    """
    group_ = _resolve_group(group)

    def checks():
        _options(label_smoothing, reduction, divisor, z_loss, ignore_index)
        ns = _tensor("logits_shard", logits_shard)
        ax = V.axis(axis, logits_shard.ndim, "logits_shard")
        shape = tuple(logits_shard.shape)
        t = ns.asarray(target)
        y = None  # class ids are checked after the exchange, against the global V
        if not ns.xp.isdtype(t.dtype, "integral"):  # probabilities: this rank's slice
            y, _ = V.target(ns, t, shape, ax, V.ignore_index(ignore_index))
        w = V.weight(ns, weight, shape[ax])
        return shape[ax], math.prod(shape) // max(1, shape[ax]), (ns, ax, shape, t, y, w)

    device = getattr(logits_shard, "device", torch.device("cpu"))
    (ns, ax, shape, t, y, w), start, classes = _exchange(
        "vocab_parallel_cross_entropy", group_, device, checks
    )
    local, soft, ignore = shape[ax], y is not None, V.ignore_index(ignore_index)
    rows_shape = shape[:ax] + shape[ax + 1 :]
    rows = math.prod(rows_shape)
    if not soft:  # global class ids: checked against the global shape
        global_shape = shape[:ax] + (classes,) + shape[ax + 1 :]
        y, _ = V.target(ns, t, global_shape, ax, ignore)
    spec = _Spec(
        group_, ns, soft, start, local, classes, ignore, float(label_smoothing), float(z_loss)
    )
    z = torch.movedim(logits_shard, ax, -1).reshape(rows, local)
    y = torch.movedim(y, ax, -1).reshape(rows, local) if soft else y.reshape(rows)
    row_losses, denom = _VocabParallelCrossEntropy.apply(z, y, w, spec)
    return _reduce(row_losses, denom, reduction, divisor, rows_shape, logits_shard.dtype)


@_fill
def vocab_parallel_linear_cross_entropy(
    hidden: torch.Tensor,
    weight_shard: torch.Tensor,
    target: torch.Tensor,
    bias_shard: torch.Tensor | None = None,
    *,
    group: Any = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    divisor: float | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Cross-entropy of ``hidden @ weight.T + bias``, the output rows sharded across ranks.

    Rank ``r`` holds rows ``[start_r, start_r + V_r)`` of the output weight
    (and of the bias); ``hidden`` and index targets are the same on every
    rank. The result and the gradients equal the single-process
    ``cross_entropy(hidden @ weight.T + bias, target)`` with the gathered
    weight. The local logits are computed ``chunk_size`` rows at a time in the
    forward and recomputed in the backward: no ``N x V_r`` tensor is kept.

    On the wire: the ``O(N)`` numbers of :func:`vocab_parallel_cross_entropy`
    in the forward; in the backward, the gradient of ``hidden`` is
    all-reduced (SUM), ``N x D`` numbers. That is inherent to sharding the
    classes (every rank's classes feed every row), and leaves ``hidden.grad``
    complete on every rank. The logits never leave their rank. All ranks
    must agree on whether ``hidden`` requires grad.

    Parameters
    ----------
    hidden : torch.Tensor of shape (..., D)
        The same on every rank.
    weight_shard : torch.Tensor of shape (V_r, D)
        This rank's rows of the output weight.
    target : torch.Tensor
        Class ids of shape ``hidden.shape[:-1]`` (global, the same on every
        rank), or this rank's slice ``(..., V_r)`` of probability targets.
    bias_shard : torch.Tensor of shape (V_r,), optional
    %(group)s
    %(ignore_index)s
    %(label_smoothing)s
    %(reduction)s
    %(divisor)s
    %(z_loss)s
    softcap : float, optional
        The logits become ``softcap * tanh(logits / softcap)`` (Gemma 2).
    chunk_size : int, optional
        Rows per chunk (default: about 16M logits, 64 MB in float32,
        per chunk; small chunks are slow on CPU).

    Returns
    -------
    torch.Tensor
        0-d, or per-row losses of shape ``hidden.shape[:-1]`` for
        ``reduction="none"``; in ``hidden``'s dtype.

    Examples
    --------
    >>> import torch
    >>> from crossentropy.torch.distributed import vocab_parallel_linear_cross_entropy
    >>> h = torch.tensor([[1.0, -1.0]])
    >>> w = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.1, 0.0]])
    >>> round(vocab_parallel_linear_cross_entropy(h, w, torch.tensor([0])).item(), 4)
    0.1818
    """
    group_ = _resolve_group(group)

    def checks():
        _options(label_smoothing, reduction, divisor, z_loss, ignore_index)
        ns = _tensor("hidden", hidden)
        _tensor("weight_shard", weight_shard)
        V.axis(-1, hidden.ndim, "hidden")
        if weight_shard.ndim != 2 or weight_shard.shape[1] != hidden.shape[-1]:
            raise ValueError(
                f"weight_shard: expected shape (V_local, {hidden.shape[-1]}), "
                f"got {tuple(weight_shard.shape)}"
            )
        local = weight_shard.shape[0]
        if bias_shard is not None:
            _tensor("bias_shard", bias_shard)
            V.same_shape(bias_shard, (local,), "bias_shard", "one entry per row of weight_shard")
        if softcap is not None and V.real_number(softcap, "softcap") <= 0:
            raise ValueError(f"softcap: expected a positive number or None, got {softcap!r}")
        if chunk_size is not None and (
            isinstance(chunk_size, bool)
            or not isinstance(chunk_size, numbers.Integral)
            or chunk_size < 1
        ):
            raise ValueError(f"chunk_size: expected a positive int or None, got {chunk_size!r}")
        shape = tuple(hidden.shape[:-1]) + (local,)
        t = ns.asarray(target)
        y = None
        if not ns.xp.isdtype(t.dtype, "integral"):  # probabilities: this rank's slice
            y, _ = V.target(ns, t, shape, len(shape) - 1, V.ignore_index(ignore_index))
        return local, math.prod(shape[:-1]), (ns, shape, t, y)

    device = getattr(hidden, "device", torch.device("cpu"))
    (ns, shape, t, y), start, classes = _exchange(
        "vocab_parallel_linear_cross_entropy", group_, device, checks
    )
    local, soft, ignore = shape[-1], y is not None, V.ignore_index(ignore_index)
    rows_shape = shape[:-1]
    rows = math.prod(rows_shape)
    if not soft:
        y, _ = V.target(ns, t, rows_shape + (classes,), len(rows_shape), ignore)
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // max(1, local))
    spec = _Spec(
        group_,
        ns,
        soft,
        start,
        local,
        classes,
        ignore,
        float(label_smoothing),
        float(z_loss),
        None if softcap is None else float(softcap),
        int(chunk_size),
    )
    h = hidden.reshape(rows, hidden.shape[-1])
    y = y.reshape(rows, local) if soft else y.reshape(rows)
    row_losses, denom = _VocabParallelLinearCrossEntropy.apply(h, weight_shard, bias_shard, y, spec)
    return _reduce(row_losses, denom, reduction, divisor, rows_shape, hidden.dtype)
