"""Every third-party module the code imports is a declared dependency (or an extra's)."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imported(package: str) -> set[str]:
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_imported_distribution_is_declared() -> None:
    declared = {
        re.split(r"[<>=!\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in requires("diffpath") or []
    }
    ours = {"diffpath", "flows", "tasks"}
    modules = set().union(*map(_imported, ours)) - ours - set(sys.stdlib_module_names)
    distributions = packages_distributions()
    undeclared = {
        module: distributions[module]
        for module in modules
        if not {d.lower().replace("_", "-") for d in distributions.get(module, [])} & declared
    }
    assert undeclared == {}
