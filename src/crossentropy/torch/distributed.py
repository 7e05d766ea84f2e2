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
O(world) numbers), one all-reduce SUM of the mean's denominator, and per
chunk of rows an all-reduce MAX of the chunk's local maxima and an
all-reduce SUM of 3 numbers per row (``s_r exp(m_r - M)``, ``A_r``, the
bracket): ``4 N + 1`` numbers in all. The logits never leave their rank.

The gradient is local and needs no communication:

    dloss / dz = (A + 2 z_loss lse) softmax(z) - a,   softmax(z) = exp(z - M - log s)

so the backward saves three numbers per row (``M``, ``log s`` and
``A + 2 z_loss lse``) next to the inputs it already references.

This module holds the public functions, the process group and the handshake
that makes every rank raise together; the chunk loop, the row math and the
two gradient modes are the engine shared with ``linear_cross_entropy``
(``crossentropy.torch._chunk``), given this rank's ``Shard``. With no
process group (a world of one) there is no shard and the pipeline is the
single-process one.

Vocabulary follows ``_numerics``: ``z`` logits as rows, ``y`` target, ``m``
row max, ``lse`` row log-sum-exp, ``g`` gradient, ``denom`` the mean's divisor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist

from crossentropy import _validate as V
from crossentropy._backend import Namespace, namespace
from crossentropy._docs import PARAMS
from crossentropy.torch._chunk import (
    RECOMPUTE,
    Options,
    Shard,
    auto_chunk_size,
    check_chunk_size,
    check_softcap,
    chunked_loss,
    resolve_mode,
)

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"]

F = TypeVar("F", bound=Callable[..., Any])



# --------------------------------------------------------------------------
# The group and the handshake (the engine's ``Shard.all_reduce`` sends the rest).


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


def _all_gather(tensor: torch.Tensor, group: _Group) -> torch.Tensor:
    """Stack every rank's ``tensor`` (same shape everywhere) in rank order."""
    if group.world == 1:
        return tensor.unsqueeze(0)
    parts = [torch.empty_like(tensor) for _ in range(group.world)]
    dist.all_gather(parts, tensor, group=group.handle)
    return torch.stack(parts)


# --------------------------------------------------------------------------
# Checks (local, then made collective by the handshake so no rank hangs).


def _tensor(name: str, t: Any) -> Namespace:
    """A floating torch tensor; returns its namespace (dtype policy) from the core."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    return namespace(t, name)[0]


def _options(label_smoothing: Any, reduction: Any, divisor: Any, z_loss: Any,
             ignore_index: Any) -> None:
    V.ignore_index(ignore_index)
    V.label_smoothing(label_smoothing)
    V.reduction(reduction)
    V.divisor(divisor)
    V.non_negative_number(z_loss, "z_loss")


def _exchange(name: str, group: _Group, device: torch.device,
              checks: Callable[[], tuple[int, int, Any]]) -> tuple[Any, int, int]:
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


def _fill(func: F) -> F:
    assert func.__doc__ is not None
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

    def checks() -> tuple[int, int, Any]:
        _options(label_smoothing, reduction, divisor, z_loss, ignore_index)
        ns = _tensor("logits_shard", logits_shard)
        ax = V.axis(axis, logits_shard.ndim, "logits_shard")
        shape = tuple(logits_shard.shape)
        t = ns.asarray(target)
        y = None  # class ids are checked after the exchange, against the global V
        if not ns.xp.isdtype(t.dtype, "integral"):  # probabilities: this rank's slice
            y, _, _ = V.target(ns, t, shape, ax, V.ignore_index(ignore_index))
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
        y, _, _ = V.target(ns, t, global_shape, ax, ignore)
    # The backward recomputes each chunk's softmax from the saved row statistics
    # (no matmul to save here, and no N x V_r gradient held from forward to backward).
    options = _options_of(group_, start, classes, local, soft, ignore, label_smoothing,
                          reduction, divisor, z_loss, None,
                          auto_chunk_size(rows, local, logits_shard.dtype, soft=soft), RECOMPUTE)
    z = torch.movedim(logits_shard, ax, -1).reshape(rows, local)
    y = torch.movedim(y, ax, -1).reshape(rows, local) if soft else y.reshape(rows)
    loss = chunked_loss(options, y, w, z)
    return loss.reshape(rows_shape) if reduction == "none" else loss


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
    weight. The local logits are computed ``chunk_size`` rows at a time: no
    ``N x V_r`` tensor is ever allocated. The gradients are obtained as by
    :func:`crossentropy.torch.linear_cross_entropy`: computed chunk by chunk
    in the forward pass when autograd will need them and the reduction is
    ``"mean"`` or ``"sum"`` (three matmuls; ``d hidden``, ``d weight_shard``
    and ``d bias_shard`` are held until the backward), else recomputed from
    the saved per-row statistics in the backward (four matmuls).

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
        Rows per chunk; the default is ``linear_cross_entropy``'s policy
        (``crossentropy.torch._linear.auto_chunk_size`` with ``V = V_r``:
        about N / 12 rows, 8 to 84 MiB of chunk buffers). A non-integer is a
        ``TypeError``, an integer below 1 a ``ValueError``.

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

    def checks() -> tuple[int, int, Any]:
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
        check_softcap(softcap)
        check_chunk_size(chunk_size)
        shape = tuple(hidden.shape[:-1]) + (local,)
        t = ns.asarray(target)
        y = None
        if not ns.xp.isdtype(t.dtype, "integral"):  # probabilities: this rank's slice
            y, _, _ = V.target(ns, t, shape, len(shape) - 1, V.ignore_index(ignore_index))
        return local, math.prod(shape[:-1]), (ns, shape, t, y)

    device = getattr(hidden, "device", torch.device("cpu"))
    (ns, shape, t, y), start, classes = _exchange(
        "vocab_parallel_linear_cross_entropy", group_, device, checks
    )
    local, soft, ignore = shape[-1], y is not None, V.ignore_index(ignore_index)
    rows_shape = shape[:-1]
    rows = math.prod(rows_shape)
    if not soft:
        y, _, _ = V.target(ns, t, rows_shape + (classes,), len(rows_shape), ignore)
    softcap_ = check_softcap(softcap)
    if chunk_size is None:
        chunk_size = auto_chunk_size(rows, local, hidden.dtype, softcap=softcap_, soft=soft)
    target_grad = soft and torch.is_grad_enabled() and target.requires_grad
    options = _options_of(group_, start, classes, local, soft, ignore, label_smoothing,
                          reduction, divisor, z_loss, softcap_, chunk_size,
                          resolve_mode("auto", reduction, target_grad))
    h = hidden.reshape(rows, hidden.shape[-1])
    y = y.reshape(rows, local) if soft else y.reshape(rows)
    loss = chunked_loss(options, y, None, h, weight_shard, bias_shard)
    return loss.reshape(rows_shape) if reduction == "none" else loss


def _options_of(group: _Group, start: int, classes: int, local: int, soft: bool, ignore: int,
                label_smoothing: float, reduction: str, divisor: float | None, z_loss: float,
                softcap: float | None, chunk_size: int, mode: str) -> Options:
    return Options(
        local=local, soft=soft, ignore_index=ignore, label_smoothing=float(label_smoothing),
        reduction=reduction, divisor=V.divisor(divisor), z_loss=float(z_loss), softcap=softcap,
        chunk_size=cast(int, check_chunk_size(chunk_size)), mode=mode,
        # a world of one is the single-process pipeline, with no shard at all
        shard=Shard(group.handle, group.world, start, classes) if group.world > 1 else None,
    )
