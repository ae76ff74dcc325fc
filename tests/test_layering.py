"""Import layering (STYLE.md): each module imports only modules below it.

The imports are read from the source with ``ast`` (every ``import`` statement, also those inside
functions), relative imports resolved against the module's package.
"""

import ast
import os
import sys

import pytest

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tfattr")

# The faces and the methods: what the middle layer must never import.
FACES = ("tfattr.methods", "tfattr.cli", "tfattr.evaluation", "tfattr.callbacks", "tfattr.distribute")
MIDDLE_LAYER = ("baselines", "metrics", "surgery", "viz", "data")


def _module_name(path: str) -> str:
    relative = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[: -len(".py")].split(os.sep)
    if relative[-1] == "__init__":
        relative = relative[:-1]
    return ".".join(relative)


def _modules_under(subpackage: str):
    for folder, _, files in os.walk(os.path.join(PACKAGE_DIR, subpackage)):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def _is_submodule(dotted: str) -> bool:
    """``tfattr.x.y`` names a module or package file of the source tree (not a name defined in one)."""
    path = os.path.join(os.path.dirname(PACKAGE_DIR), *dotted.split("."))
    return os.path.isfile(path + ".py") or os.path.isfile(os.path.join(path, "__init__.py"))


def imported_modules(path: str):
    """``(line, module)`` for each import in ``path``; ``from tfattr import X`` gives ``tfattr.X`` when X is a
    module, else ``tfattr`` (the package top)."""
    name = _module_name(path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield node.lineno, candidate if _is_submodule(candidate) else base


def forbidden(module: str) -> bool:
    return module == "tfattr" or any(module == face or module.startswith(face + ".") for face in FACES)


@pytest.mark.parametrize("subpackage", MIDDLE_LAYER)
def test_middle_layer_imports_neither_methods_nor_faces_nor_the_package_top(subpackage):
    offending = [
        f"{os.path.relpath(path, os.path.dirname(PACKAGE_DIR))}:{line} imports {module}"
        for path in _modules_under(subpackage)
        for line, module in imported_modules(path)
        if forbidden(module)
    ]
    assert offending == []


def test_the_layering_check_sees_every_form_of_a_forbidden_import(tmp_path, monkeypatch):
    """The checker itself: plain, from-package, relative and function-local imports are all seen."""
    fake = tmp_path / "tfattr"
    (fake / "baselines").mkdir(parents=True)
    for module in ("__init__.py", "errors.py", "baselines/__init__.py", "baselines/other.py"):
        (fake / module).write_text("")
    (fake / "methods").mkdir()
    (fake / "methods" / "__init__.py").write_text("")
    source = ("import tfattr\nfrom tfattr import IntegratedGradients\nfrom tfattr import errors\n"
              "from .. import methods\nfrom . import other\ndef f():\n    from tfattr.cli import main\n")
    (fake / "baselines" / "bad.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_DIR", str(fake))
    found = [(line, module) for line, module in imported_modules(str(fake / "baselines" / "bad.py"))]
    assert sorted(found) == [(1, "tfattr"), (2, "tfattr"), (3, "tfattr.errors"), (4, "tfattr.methods"),
                             (5, "tfattr.baselines.other"), (7, "tfattr.cli")]
    assert [forbidden(module) for _, module in sorted(found)] == [True, True, False, True, False, True]


ABOVE_THE_CORE = ("tfattr.methods", "tfattr.baselines", "tfattr.metrics", "tfattr.surgery", "tfattr.viz",
                  "tfattr.data", "tfattr.callbacks", "tfattr.evaluation", "tfattr.cli", "tfattr.distribute")


def test_core_imports_nothing_above_it():
    """tfattr/core/*.py import only the core itself, tfattr.errors and third-party packages: not the
    layers built on the core (their seeded random streams included) and not the package top."""
    offending = [
        f"{os.path.relpath(path, os.path.dirname(PACKAGE_DIR))}:{line} imports {module}"
        for path in _modules_under("core")
        for line, module in imported_modules(path)
        if module == "tfattr" or any(module == layer or module.startswith(layer + ".") for layer in ABOVE_THE_CORE)
    ]
    assert offending == []
    assert len(list(_modules_under("core"))) >= 10  # the walk sees the core's modules
