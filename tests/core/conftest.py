"""Every core test runs twice: on the numba kernel path and on the generic array-API path.

``path`` is an autouse fixture: ``"kernel"`` leaves the engine free to take
the fused kernels (NumPy float32 / float64 logits with the class axis last,
when numba is installed); ``"generic"`` runs the test inside
``crossentropy._kernels.disabled()``. Only NumPy inputs can take the kernels,
so the generic copy of a test on another backend is dropped at collection.
A test parametrised by an ``accumulation`` mode of the generic path (e.g.
``"compensated"``) runs that mode on the generic path only: its kernel copy is
dropped unless the mode is ``"float64"`` (the kernels' own).
"""

from __future__ import annotations

import pytest

from crossentropy import _engine

PATHS = ("kernel", "generic")


@pytest.fixture(autouse=True, params=PATHS)
def path(request):
    kernels = _engine.kernels()
    if request.param == "kernel" and kernels is None:
        pytest.skip("numba missing: no kernel path")
    if request.param == "generic" and kernels is not None:
        with kernels.disabled():
            yield request.param
        return
    yield request.param


def pytest_collection_modifyitems(config, items):
    """Drop the copies that would run the same path twice (see the module docstring)."""
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        xb = params.get("xb")
        same = params.get("path") == "generic" and xb is not None and xb.backend.value != "numpy"
        same = same or (params.get("path") == "kernel"
                        and params.get("accumulation", "float64") != "float64")
        (dropped if same else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
