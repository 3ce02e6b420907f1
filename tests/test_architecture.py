"""The package's layout: layers that only import downwards, small files, typed configs below the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "popsteer"

LAYERS = ["errors", "util", "kernels", "data", "eval", "retrieval", "models", "sae", "steering", "baselines", "report",
          "browse", "stages", "platform", "serve", "app"]
"""Bottom to top: a module may import its own layer and the ones below it, never one above."""
ENTRY_POINTS = {"__init__", "__main__", "sweep"}
"""Top-level modules that only start the app."""


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _layer(module: str) -> int:
    """Rank of a dotted popsteer module name (entry points above everything)."""
    parts = module.split(".")
    if len(parts) == 1:
        return len(LAYERS)
    head = parts[1]
    return len(LAYERS) if head in ENTRY_POINTS else LAYERS.index(head)


def _name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("popsteer")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("popsteer") and not node.level:
            out += [f"{node.module}.{a.name}" if node.module == "popsteer" else node.module for a in node.names]
    return out


def test_every_module_sits_in_a_known_layer():
    for path in _modules():
        name = _name(path)
        assert name == "popsteer" or name.split(".")[1] in LAYERS or name.split(".")[1] in ENTRY_POINTS, name


def test_no_module_imports_a_layer_above_it():
    upward = []
    for path in _modules():
        name = _name(path)
        own = _layer(name) if name != "popsteer" else len(LAYERS)
        for target in _imports(path):
            if target != "popsteer" and _layer(target) > own:
                upward.append(f"{name} imports {target}")
    assert not upward, upward


def test_files_are_small_and_the_top_level_is_thin():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= 8, top


def test_argparse_namespaces_stay_in_the_cli():
    users = [str(p.relative_to(PACKAGE)) for p in _modules() if "Namespace" in p.read_text()]
    assert all(u.startswith("app/") for u in users), users


def test_only_the_adapter_imports_recbole():
    importers = [str(p.relative_to(PACKAGE)) for p in _modules()
                 if any(line.lstrip().startswith(("import recbole", "from recbole"))
                        for line in p.read_text().splitlines())]
    assert importers == ["models/recbole_adapter.py"], importers
