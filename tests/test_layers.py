"""The layering of docs/architecture.md, enforced: dependencies point down only.

Reads every module of ``src/vshare`` with ``ast`` (nothing is imported) and checks each
import against the table below: which vshare packages, and which third-party
distributions, a package may use. The standard library is always allowed.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vshare"

LAYER0 = {"protocol", "policy", "terms"}
LAYER1 = {"transport", "backend", "store"}
ANY = {"*"}
PACKAGES = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
#: Packages whose ``__init__`` is their public face: other packages import ``vshare.gateway``,
#: never ``vshare.gateway.config`` or ``.server`` (the composition root included).
PUBLIC_FACES = {"gateway"}

#: package -> (vshare packages it may import, third-party modules it may import)
RULES: dict[str, tuple[set[str], set[str]]] = {
    "protocol": (set(), set()),
    "policy": (set(), set()),
    "terms": (set(), set()),
    "transport": (set(), {"anyio", "uvloop"}),
    "backend": ({"terms"}, set()),
    "store": (LAYER0, ANY),
    "gateway": (LAYER0 | LAYER1, ANY),
    "control": (LAYER0 | LAYER1, ANY),
    "client": ({"protocol", "transport"}, ANY),
    "api": (ANY, ANY),
    "fuse": (ANY, ANY),
    "cli": (ANY, ANY),
    # The Manila driver: a client of the REST API, as the CLI is, plus OpenStack's packages.
    "manila": (ANY, {"manila", "oslo_config", "httpx"}),
    "node": (PACKAGES - {"cli"}, ANY),  # the composition root: below the command line
    "testing": (ANY, ANY),
    "": (set(), set()),  # vshare/__init__.py
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            # Relative imports stay inside the package by construction only if they do not
            # climb out of it; forbid climbing, so every cross-package import is absolute.
            assert node.level == 1, f"{path}:{node.lineno}: relative import climbs packages"
    return out


def modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def violations(path: Path, package: str) -> list[str]:
    """What is wrong with the imports of ``path``, a module of ``package``."""
    assert package in RULES, f"{path}: package {package!r} has no place in the layer table"
    allowed_pkgs, allowed_third = RULES[package]
    found = []
    for lineno, name in imports_of(path):
        top = name.split(".")[0]
        if top == "vshare":
            parts = name.split(".")
            target = parts[1] if len(parts) > 1 else ""
            allowed = target in (package, "") or target in allowed_pkgs or "*" in allowed_pkgs
            if not allowed:
                found.append(f"{lineno}: {package or 'vshare'} may not import vshare.{target}")
            elif target in PUBLIC_FACES and target != package and len(parts) > 2:
                found.append(f"{lineno}: {package} may import vshare.{target}, not {name}")
        elif (
            top not in sys.stdlib_module_names
            and top != "__future__"
            and top not in allowed_third
            and "*" not in allowed_third
        ):
            found.append(f"{lineno}: {package} may not import third-party {top!r}")
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    rel = path.relative_to(SRC)
    package = rel.parts[0] if len(rel.parts) > 1 else ""
    if rel.name == "__main__.py":
        package = "cli"  # ``python -m vshare`` is the command line
    assert violations(path, package) == [], str(rel)


def test_the_checker_catches_violations(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("import socket\nfrom vshare.gateway import x\nimport anyio\n")
    assert violations(bad, "protocol") == [
        "2: protocol may not import vshare.gateway",
        "3: protocol may not import third-party 'anyio'",
    ]
    assert violations(bad, "transport") == ["2: transport may not import vshare.gateway"]
    assert violations(bad, "cli") == []
    inside = tmp_path / "n.py"
    inside.write_text("from vshare.gateway.config import load_config\nimport vshare.cli\n")
    assert violations(inside, "node") == [
        "1: node may import vshare.gateway, not vshare.gateway.config",
        "2: node may not import vshare.cli",
    ]
    assert violations(inside, "gateway") == ["2: gateway may not import vshare.cli"]
