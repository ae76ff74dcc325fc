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
FACES = ("tfattr.methods", "tfattr.cli", "tfattr.evaluation", "tfattr.callbacks", "tfattr.distribute",
         "tfattr.streaming", "tfattr.beam")
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


# -- the whole package: no cycle, no package top, no private name across subpackages (issue 25 item 4) --
def package_modules():
    """``{dotted name: path}`` of every module of the package (``tfattr`` itself included)."""
    return {_module_name(path): path for path in _modules_under("")}


def import_graph():
    """``{module: {(imported tfattr module, line)}}``, function-local imports included."""
    modules = package_modules()
    return {name: {(module, line) for line, module in imported_modules(path) if module in modules and module != name}
            for name, path in modules.items()}


def import_cycles(graph):
    """The strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _ in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_cycle_between_tfattr_modules():
    """Every import counts, function-local ones too: a cycle hidden in functions still means two modules that
    cannot be understood (or loaded first) one without the other."""
    graph = import_graph()
    cycles = import_cycles(graph)
    described = [" → ".join(cycle) + ": " + "; ".join(f"{a} imports {b} (line {line})" for a in cycle
                                                        for b, line in sorted(graph[a]) if b in cycle)
                 for cycle in cycles]
    assert described == []
    assert len(graph) >= 40 and sum(len(edges) for edges in graph.values()) >= 100  # the walk sees the package


def test_no_package_module_imports_the_package_top():
    """``import tfattr`` / ``from tfattr import IntegratedGradients`` is for users; the package's own modules
    import submodules (``from tfattr.methods import IntegratedGradients``, ``from tfattr import errors``)."""
    offending = [f"{name}:{line} imports the package top" for name, path in sorted(package_modules().items())
                 if name != "tfattr" for line, module in imported_modules(path) if module == "tfattr"]
    assert offending == []


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _unit(module: str) -> str:
    """The subpackage a module belongs to (``tfattr.methods.base`` → ``tfattr.methods``); a top-level module
    is its own. A subpackage's modules share their private helpers (``metrics/_common.py``)."""
    return ".".join(module.split(".")[:2])


def _private_definitions(tree):
    """Private names a module defines: functions, classes, methods, assigned names and attributes."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return {name for name in names if _is_private(name)}


def private_uses_across_subpackages():
    """``(module, line, what)`` for each private name used outside the subpackage that defines it:
    ``from tfattr.x import _y``, an import of a private module from outside its package, and
    ``something._y`` (not on ``self``/``cls``/``super()``) where ``_y`` is defined only in other subpackages."""
    modules = package_modules()
    trees = {name: ast.parse(open(path, encoding="utf-8").read(), path) for name, path in modules.items()}
    defined = {name: _private_definitions(tree) for name, tree in trees.items()}
    defined_in_unit = {}
    for name, names in defined.items():
        defined_in_unit.setdefault(_unit(name), set()).update(names)
    found = []
    for name, tree in sorted(trees.items()):
        own = defined_in_unit[_unit(name)]
        elsewhere = set().union(*(names for unit, names in defined_in_unit.items() if unit != _unit(name)))
        for line, module in imported_modules(modules[name]):
            parts = module.split(".")
            for depth, part in enumerate(parts):
                if _is_private(part) and not (name + ".").startswith(".".join(parts[:depth]) + "."):
                    found.append((name, line, f"imports the private module {module}"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tfattr"):
                for alias in node.names:
                    if _is_private(alias.name) and _unit(node.module) != _unit(name):
                        found.append((name, node.lineno, f"from {node.module} import {alias.name}"))
            elif isinstance(node, ast.Attribute) and _is_private(node.attr) and node.attr not in own \
                    and node.attr in elsewhere:
                value = node.value
                if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                    continue
                if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "super":
                    continue
                found.append((name, node.lineno, ast.unparse(node)))
    return found


#: Private uses allowed, by module: NoiseTunnel drives any method through the methods' private
#: ``_merge``/``_explain``/``_package`` until the method contract gives it a public protocol (issue 25
#: item 1). Nothing else.
PRIVATE_USE_ALLOWED = {"tfattr.core.noise": ("_merge", "_explain", "_package")}


def test_no_private_name_is_used_across_subpackages():
    offending = [f"{name}:{line} {what}" for name, line, what in private_uses_across_subpackages()
                 if not any(what.endswith("." + allowed) for allowed in PRIVATE_USE_ALLOWED.get(name, ()))]
    assert offending == []


def test_the_package_checks_see_a_cycle_a_top_import_and_private_uses(tmp_path, monkeypatch):
    """The checkers themselves, on a fake package: a cycle through function-local imports, the package top
    imported from a face, private names taken across subpackages (and one shared within its own)."""
    fake = tmp_path / "tfattr"
    files = {
        "__init__.py": "from tfattr.methods import Method\n",
        "cli.py": "def main():\n    from tfattr import Method\n    return Method\n",
        "methods/__init__.py": "from tfattr.methods.base import Method\n",
        "methods/base.py": "class Method:\n    def _merge(self):\n        return self._merge\n",
        "methods/other.py": "from tfattr.methods.base import Method\nMethod()._merge()\n",  # within: allowed
        "baselines/__init__.py": "",
        "baselines/a.py": "def f():\n    from tfattr.baselines.b import g\n    return g\n_hidden = 1\n",
        "baselines/b.py": "def g():\n    from tfattr.baselines import c\n    return c\n",
        "baselines/c.py": "import tfattr.baselines.a\n",
        "core/__init__.py": "",
        "core/noise.py": "def run(method):\n    return method._merge()\n",
        "core/grab.py": "from tfattr.baselines.a import _hidden\nfrom tfattr.metrics._common import x\n",
        "metrics/__init__.py": "",
        "metrics/_common.py": "x = 1\n",
        "metrics/user.py": "from tfattr.metrics._common import x\n",  # its own package's private module
    }
    for relative, source in files.items():
        (fake / relative).parent.mkdir(parents=True, exist_ok=True)
        (fake / relative).write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_DIR", str(fake))
    assert import_cycles(import_graph()) == [["tfattr.baselines.a", "tfattr.baselines.b", "tfattr.baselines.c"]]
    tops = [name for name, path in package_modules().items() if name != "tfattr"
            for _, module in imported_modules(path) if module == "tfattr"]
    assert tops == ["tfattr.cli"]
    assert sorted(private_uses_across_subpackages()) == [
        ("tfattr.core.grab", 1, "from tfattr.baselines.a import _hidden"),
        ("tfattr.core.grab", 2, "imports the private module tfattr.metrics._common"),
        ("tfattr.core.noise", 2, "method._merge"),
    ]
