"""Packages import one way (../shared/DESIGN.md, "Packages, one direction of imports"):
api -> controller -> flows (call flows) -> acd, chat, ivr (decisions) -> destinations ->
pbx, extensions -> core. Read from the source with ast, so a new import that breaks the
layering fails here instead of turning into a cycle later."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What each package may import (besides itself). migrations reads every model.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "pbx": {"core"},
    "extensions": {"core"},
    "destinations": {"core", "extensions"},
    "ivr": {"core", "extensions", "destinations"},
    "acd": {"core", "extensions", "destinations", "ivr"},
    "chat": {"core", "extensions", "destinations", "acd"},
    "flows": {"core", "extensions", "destinations", "pbx", "ivr", "acd", "chat"},
    "controller": {"core", "extensions", "destinations", "pbx", "ivr", "acd", "chat", "flows"},
    "api": {"core", "extensions", "destinations", "pbx", "ivr", "acd", "chat", "flows",
            "controller", "migrations"},
    "migrations": {"core", "extensions", "pbx", "ivr", "acd", "chat"},
}  # fmt: skip


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found & set(ALLOWED)


def test_every_package_imports_only_the_layers_below_it() -> None:
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for imported in imported_packages(path) - allowed - {package}:
                wrong.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not wrong, "\n".join(wrong)
