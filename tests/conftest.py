"""One backend x dtype fixture for the whole suite, and tolerances per dtype.

``xb`` is parametrised over every installed array library (NumPy always;
PyTorch, JAX and array-api-strict, the standard's own reference namespace,
when installed) and float32 / float64. array-api-strict has no features
beyond the standard (no integer-array ``__setitem__``, no ``__array__``), so a
core function that passes on it works on any conforming library. Tests build inputs in
NumPy float64, hand them to ``xb.asarray`` and compare results with
``xb.close`` against float64 oracles.
"""

from __future__ import annotations

import enum
import importlib.util
import os
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import settings

# CI runs the same examples every time; local runs keep exploring.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)  # so that float64 is testable on JAX too


class Backend(enum.Enum):
    NUMPY = "numpy"
    TORCH = "torch"
    JAX = "jax"
    ARRAY_API_STRICT = "array_api_strict"

    def available(self) -> bool:
        return self is Backend.NUMPY or importlib.util.find_spec(self.value) is not None


RTOL = {"float64": 1e-10, "float32": 2e-5, "float16": 2e-2, "bfloat16": 2e-2}


@dataclass(frozen=True)
class XB:
    """An array library and a floating dtype, with conversion helpers."""

    backend: Backend
    dtype_name: str

    @property
    def module(self):
        if self.backend is Backend.NUMPY:
            return np
        if self.backend is Backend.TORCH:
            import torch

            return torch
        if self.backend is Backend.ARRAY_API_STRICT:
            import array_api_strict

            return array_api_strict
        import jax.numpy as jnp

        return jnp

    @property
    def dtype(self):
        return getattr(self.module, self.dtype_name)

    def asarray(self, x, dtype=None):
        """A NumPy array (or list) in this library; floats get this dtype."""
        x = np.asarray(x)
        if dtype is None and x.dtype.kind == "f":
            dtype = self.dtype
        if self.backend is Backend.TORCH:
            import torch

            t = torch.from_numpy(np.array(x, copy=True))
            return t.to(dtype) if dtype is not None else t
        if self.backend is Backend.JAX:
            import jax.numpy as jnp

            return jnp.asarray(x, dtype=dtype)
        if self.backend is Backend.ARRAY_API_STRICT:
            import array_api_strict

            return array_api_strict.asarray(np.array(x, copy=True), dtype=dtype)
        return x.astype(dtype) if dtype is not None else x

    def to_numpy(self, x) -> np.ndarray:
        if self.backend is Backend.ARRAY_API_STRICT:
            return np.from_dlpack(x).astype(np.float64)
        if self.backend is Backend.TORCH:
            return x.detach().float().numpy() if x.dtype != self.module.float64 else (
                x.detach().numpy())
        return np.asarray(x).astype(np.float64)

    @property
    def rtol(self) -> float:
        return RTOL[self.dtype_name]

    def check(self, result, shape):
        """Same library, dtype and shape as the inputs."""
        assert type(result).__module__.split(".")[0] == type(self.asarray([0.0])).__module__.split(
            ".")[0], type(result)
        assert result.dtype == self.dtype, (result.dtype, self.dtype)
        assert tuple(result.shape) == tuple(shape)

    def close(self, result, expected, *, rtol=None, atol=None, shape=None):
        if shape is not None:
            self.check(result, shape)
        rtol = self.rtol if rtol is None else rtol
        atol = rtol if atol is None else atol
        np.testing.assert_allclose(self.to_numpy(result), np.asarray(expected, dtype=np.float64),
                                   rtol=rtol, atol=atol)


def _params():
    out = []
    for backend in Backend:
        for dtype in ("float32", "float64"):
            marks = [] if backend.available() else [pytest.mark.skip(f"{backend.value} missing")]
            out.append(pytest.param(XB(backend, dtype), id=f"{backend.value}-{dtype}",
                                    marks=marks))
    return out


@pytest.fixture(params=_params())
def xb(request) -> XB:
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)
