"""The package dependency rule of DESIGN.md ("Packages"), checked on the source.

Dependencies point down the table and never back up: `rl` may import anything; `rollout`
imports `envs`, `policies`, `kernels`; `rewards` imports only the data types (`envs.base`,
`rollout.episode`); `envs` imports neither `rollout` nor `rl`; `policies` builds on `kernels`;
`kernels` on nothing of ours. Every import counts, wherever it sits: at module level, inside a
function (the lazy imports that keep Ray actors light), under `if TYPE_CHECKING:`, or as a
literal `importlib.import_module("...")`, because each of them couples the packages just the same.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The project's own top-level packages (pyproject.toml, [tool.setuptools.packages.find]); imports
# of anything else (torch, ray, the standard library) are outside this rule.
PROJECT = frozenset({"rl", "rollout", "rewards", "envs", "policies", "kernels"})

# What each package below `rl` may import of the project, besides itself: the "depends on" column
# of the table. An entry is a module prefix, so "envs.base" allows `envs.base` and nothing else
# of `envs`.
ALLOWED: dict[str, frozenset[str]] = {
    "rollout": frozenset({"envs", "policies", "kernels"}),
    "rewards": frozenset({"envs.base", "rollout.episode"}),
    "envs": frozenset(),
    "policies": frozenset({"kernels"}),
    "kernels": frozenset(),
}


@dataclass(frozen=True)
class Import:
    line: int
    module: str  # the fully qualified module (or module attribute) imported
    source: str  # the statement as written, for the message


def _package_of(path: Path, root: Path) -> list[str]:
    """The package a file belongs to, as its dotted parts, for resolving relative imports."""
    return list(path.relative_to(root).parent.parts)


def _imports(path: Path, root: Path) -> list[Import]:
    """Every import in one file, at any depth of the tree."""
    text = path.read_text()
    found: list[Import] = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, alias.name, ast.unparse(node)) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = [node.module] if node.module else []
            if node.level:
                package = _package_of(path, root)
                base = package[: len(package) - (node.level - 1)] + base
            # `from envs import registry` imports the module envs.registry: judge each name.
            found += [Import(node.lineno, ".".join(base + ([alias.name] if alias.name != "*" else [])), ast.unparse(node)) for alias in node.names]
        elif isinstance(node, ast.Call) and _is_import_call(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append(Import(node.lineno, first.value, ast.unparse(node)))
    return sorted(found, key=lambda imp: imp.line)


def _is_import_call(func: ast.expr) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in {"import_module", "__import__"}


def _allowed(package: str, module: str) -> bool:
    top = module.split(".")[0]
    if top not in PROJECT or top == package:
        return True
    return any(module == prefix or module.startswith(prefix + ".") for prefix in ALLOWED[package])


def violations(package: str, root: Path = REPO) -> list[str]:
    """One line per forbidden import in `package`: file, line, the statement, and what is allowed."""
    allowed = ", ".join(sorted(ALLOWED[package])) or "nothing"
    out = []
    for path in sorted((root / package).rglob("*.py")):
        for imp in _imports(path, root):
            if not _allowed(package, imp.module):
                out.append(f"{path.relative_to(root)}:{imp.line}: `{imp.source}` imports {imp.module}; {package}/ may import only {allowed} of the project")
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_follow_the_dependency_rule(package):
    found = violations(package)
    assert not found, "dependency rule (DESIGN.md, Packages) broken:\n" + "\n".join(found)


def test_the_checker_sees_imports_at_every_depth(tmp_path):
    """A guard on the guard: lazy, TYPE_CHECKING, relative and dynamic imports are all caught."""
    pkg = tmp_path / "policies"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "m.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import kernels.qk_max\n"
        "from . import chat\n"
        "if TYPE_CHECKING:\n"
        "    from rl.config import PolicyConfig\n"
        "def f():\n"
        "    import rollout.worker\n"
        "    from .. import envs\n"
        "    return importlib.import_module('rewards.registry')\n"
    )
    found = violations("policies", tmp_path)
    assert [line.split(": ")[0] for line in found] == ["policies/m.py:5", "policies/m.py:7", "policies/m.py:8", "policies/m.py:9"], found
