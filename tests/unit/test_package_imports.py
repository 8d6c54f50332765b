"""Imports between our top-level packages go one way (DESIGN.md, "Packages"): checked on the
source, so a stray import fails here rather than as a cycle at start-up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = frozenset({"core", "pbx", "ivr", "acd", "chat", "extensions", "api", "migrations"})
# Package -> ours it must never import.
FORBIDDEN = {
    "core": OURS - {"core"},
    "acd": frozenset({"chat", "api"}),
    "chat": frozenset({"api", "ivr"}),
}


def imported_packages(package: str) -> dict[str, set[str]]:
    """Module path -> our top-level packages it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names & OURS
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downwards(package: str) -> None:
    wrong = {
        module: sorted(names & FORBIDDEN[package])
        for module, names in imported_packages(package).items()
        if names & FORBIDDEN[package]
    }
    assert wrong == {}
