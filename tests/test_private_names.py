"""No module of ``crossentropy`` uses another module's private name (issue 12).

A private name is one with a single leading underscore (``_prepare``, not
``__all__``) bound at the top of a module. Another module may import the
module (``from crossentropy import _validate`` is fine: the module is the
package's own) but not reach into it for such a name, neither by
``from m import _name`` nor by ``m._name``. A name other modules need gets a
name without the underscore (public inside the package, not in ``__all__``).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _modules(src: Path) -> dict[str, Path]:
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _bound(path: Path) -> set[str]:
    """The names bound at the top level of a module."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def uses_of_private_names(src: Path, files: list[Path], package: str = "crossentropy"):
    """``(file, line, "module.name")`` for every use of another module's private name."""
    modules = _modules(src)
    bound = {name: _bound(path) for name, path in modules.items()}
    found = []
    for file in files:
        tree = ast.parse(file.read_text())
        here = next((m for m, p in modules.items() if p.resolve() == file.resolve()), None)
        alias: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == package:
                        alias[a.asname or package] = a.name if a.asname else package
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] == package:
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    if full in modules:
                        alias[a.asname or a.name] = full
                    elif (_private(a.name) and node.module != here
                          and a.name in bound.get(node.module, ())):
                        found.append((file, node.lineno, full))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            parts, value = [], node.value
            while isinstance(value, ast.Attribute):
                parts.append(value.attr)
                value = value.value
            if not isinstance(value, ast.Name) or value.id not in alias:
                continue
            module = ".".join([alias[value.id], *reversed(parts)])
            full = f"{module}.{node.attr}"
            if (module in modules and module != here and full not in modules
                    and node.attr in bound[module]):
                found.append((file, node.lineno, full))
    return found


def test_no_module_uses_another_modules_private_name():
    files = sorted(SRC.rglob("*.py"))
    assert uses_of_private_names(SRC, files) == []


def test_the_check_finds_a_private_name(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "__init__.py").write_text("")
    (src / "pkg" / "a.py").write_text("def _helper():\n    pass\n\n\ndef public():\n    pass\n")
    user = src / "pkg" / "b.py"
    user.write_text("import pkg.a as a\nfrom pkg import a as aa\n"
                    "from pkg.a import _helper, public\n"
                    "a._helper()\naa._helper()\naa.public()\n")
    found = uses_of_private_names(src, [user], package="pkg")
    assert sorted((line, name) for _, line, name in found) == [
        (3, "pkg.a._helper"), (4, "pkg.a._helper"), (5, "pkg.a._helper")]
