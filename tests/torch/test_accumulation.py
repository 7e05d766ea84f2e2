"""The accelerator accumulation mode creates no float64 tensor, and is picked by device.

On a CUDA tensor the generic path accumulates in float32 with compensated sums
(``_config.ACCUMULATION = "auto"``), because consumer GPUs run float64 at
1/32-1/64 of float32. This machine has no GPU: the mode is forced
(``_backend.accumulation("compensated")``) on CPU tensors with the kernels off,
which runs the same code, and a dispatch mode records the dtype of every
tensor each aten op returns. Its accuracy is tested in
``tests/core/test_accuracy.py``.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import crossentropy as ce
import crossentropy.torch as cet
from crossentropy import _backend, _config, _engine


class _Float64Ops(TorchDispatchMode):
    """Records the aten ops that return a float64 tensor."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        results = out if isinstance(out, (tuple, list)) else (out,)
        if any(isinstance(r, torch.Tensor) and r.dtype == torch.float64 for r in results):
            self.ops.append(str(func))
        return out


def _generic():
    k = _engine.kernels()
    if k is None:
        import contextlib

        return contextlib.nullcontext()
    return k.disabled()


def _workload(dtype):
    """Forward and backward of the softmax and binary families, every target form."""
    g = torch.Generator().manual_seed(3)
    z = (torch.randn(64, 10, generator=g) * 3).to(dtype).requires_grad_(True)
    t = torch.randint(0, 10, (64,), generator=g)
    t[::7] = -100
    w = torch.rand(10, generator=g).to(dtype) + 0.5
    p = torch.softmax(torch.randn(64, 10, generator=g), dim=-1).to(dtype)
    y = torch.rand(64, 10, generator=g).to(dtype)
    total = (cet.cross_entropy(z, t)
             + cet.cross_entropy(z, t, weight=w, label_smoothing=0.1, reduction="sum")
             + cet.cross_entropy(z, p, label_smoothing=0.05)
             + cet.cross_entropy(z.transpose(0, 1), t, axis=0)  # a non-contiguous layout
             + cet.binary_cross_entropy_with_logits(z, y)
             + ce.focal_loss(z, t) + ce.poly1_cross_entropy(z, t, epsilon=1.0)
             + ce.kl_divergence(p, torch.softmax(z, dim=-1)).sum()
             + ce.entropy(p).sum() + ce.logsumexp(z, axis=-1).sum())
    total.backward()
    return total


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_compensated_mode_creates_no_float64_tensor(dtype):
    with _generic(), _backend.accumulation("compensated"), _Float64Ops() as rec:
        total = _workload(dtype)
    assert torch.isfinite(total)
    assert rec.ops == []


def test_float64_mode_does_create_float64_tensors():
    """The recorder sees float64 where it is used: the test above can fail."""
    with _generic(), _backend.accumulation("float64"), _Float64Ops() as rec:
        _workload(torch.float32)
    assert any("sum" in op for op in rec.ops)


def test_compensated_mode_matches_float64_mode():
    with _generic(), _backend.accumulation("float64"):
        want = _workload(torch.float32).item()
    with _generic(), _backend.accumulation("compensated"):
        got = _workload(torch.float32).item()
    assert got == pytest.approx(want, rel=1e-6)


def test_auto_mode_is_compensated_on_accelerators_only():
    xp = array_api_compat.array_namespace(torch.ones(1))
    assert _config.ACCUMULATION == "auto"
    assert _backend.on_accelerator(xp, torch.device("cuda", 0))
    assert _backend.on_accelerator(xp, torch.device("mps"))
    assert not _backend.on_accelerator(xp, torch.device("cpu"))
    assert not _backend.on_accelerator(array_api_compat.array_namespace(np.ones(1)), "cpu")
    ns, _ = _backend.namespace(torch.ones(2, 3), "logits")
    assert (ns.accum, ns.compensated) == (torch.float64, False)  # CPU: float64 is cheap
    with _backend.accumulation("compensated"):
        ns, _ = _backend.namespace(torch.ones(2, 3, dtype=torch.float16), "logits")
        assert (ns.compute, ns.accum, ns.compensated) == (torch.float32, torch.float32, True)
        ns, _ = _backend.namespace(torch.ones(2, 3, dtype=torch.float64), "logits")
        assert (ns.accum, ns.compensated) == (torch.float64, False)  # float64 stays float64
    with pytest.raises(ValueError, match="mode"):
        with _backend.accumulation("float128"):
            pass
