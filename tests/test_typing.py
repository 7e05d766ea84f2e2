"""A user's script type-checks under ``mypy --strict`` (issue 16).

The package ships ``py.typed`` and annotates its public functions, so a user's
code sees real types, not ``Any`` from a missing-stubs error. The scripts
checked are the README's Python examples, each on its own (a block sees the
imports of the blocks before it, as a reader's session would), and one
script that uses the layers and the torch drop-ins.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")
pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]

# torch leaves some methods unannotated (Tensor.backward) and TensorFlow/Keras ship
# no stubs: those are theirs, not ours, so they are set aside; the rest is --strict.
CONFIG = """\
[mypy]
strict = True
untyped_calls_exclude = torch
[mypy-tensorflow.*,keras.*]
ignore_missing_imports = True
"""

USER_SCRIPT = '''\
import numpy as np
import numpy.typing as npt
import torch

import crossentropy as ce
from crossentropy.torch import CrossEntropyLoss

logits: npt.NDArray[np.float64] = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.0]])
target = np.array([0, 1])
loss: npt.NDArray[np.float64] = ce.cross_entropy(logits, target)
grad = ce.cross_entropy_grad(logits, target, out=np.empty_like(logits))
both = ce.cross_entropy_with_grad(logits, target, label_smoothing=0.1)
h = ce.entropy([0.7, 0.2, 0.1])
z = torch.randn(8, 5, requires_grad=True)
y = torch.randint(0, 5, (8,))
CrossEntropyLoss(label_smoothing=0.1)(z, y).backward()
ce.cross_entropy(z, y).backward()
layer = ce.CrossEntropyLoss()
layer.forward(logits, target)
d = layer.backward()
print(ce.__version__, loss, grad, both, h, d)
'''


def _scripts() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    scripts, imports = [], []
    for block in blocks:
        scripts.append("\n".join(imports) + "\n" + block)
        imports += [line for line in block.splitlines() if re.match(r"(import|from) \S", line)]
    return [*scripts, USER_SCRIPT]


def test_user_scripts_pass_mypy_strict(tmp_path):
    (tmp_path / "mypy.ini").write_text(CONFIG)
    files = []
    for i, source in enumerate(_scripts()):
        path = tmp_path / f"script_{i}.py"
        path.write_text(source)
        files.append(str(path))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--no-incremental", *files],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
