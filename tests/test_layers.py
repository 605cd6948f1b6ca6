"""The package's imports point downward only: core → model → rewrite → quant → targets → bench → jobs → api → cli.

A module may import its own layer or any layer below it, never one above (docs/design.md, "Layout").
Function-level (lazy) imports count too: they are arrows all the same.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rmt_deploy"
LAYERS = ["core", "model", "rewrite", "quant", "targets", "bench", "jobs", "api", "cli"]
# Top-level modules outside the sub-packages, by layer; a sub-package is its own layer.
TOP_LEVEL = {"api": "api", "errors": "core", "quiet": "core", "telemetry": "core", "artifacts": "core",
             "cpu": "core", "outdir": "core", "bundled": "core", "optional": "core", "sizes": "core",
             "data": "core", "atomic": "core", "progress": "core", "version": "core"}


def _layer(module: str) -> str:
    """'rmt_deploy.quant.encode' → 'quant'."""
    parts = module.split(".")
    if len(parts) == 1:  # the package root is the Python API (rmt_deploy.export, .load …)
        return "api"
    return parts[1] if parts[1] in LAYERS else TOP_LEVEL[parts[1]]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every rmt_deploy import in ``path``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from X import name`: name is a module when a file says so, else an attribute of X.
            targets = [f"{target}.{a.name}" if _is_module(f"{target}.{a.name}") else target for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, t) for t in targets if t == "rmt_deploy" or t.startswith("rmt_deploy.")]
    return sorted(set(found))


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        assert _layer(_module_name(path)) in LAYERS, path


def test_imports_point_downward_only():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = _layer(_module_name(path))
        for line, target in _imports(path):
            there = _layer(target)
            if LAYERS.index(there) > LAYERS.index(here):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({here}) imports {target} ({there})")
    assert not upward, "imports that run back up the layers:\n" + "\n".join(upward)


MAX_MODULE_LINES, MAX_CLASS_LINES = 420, 200  # docs/design.md "Layout": small modules with one job


def test_modules_and_classes_stay_small():
    big = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            big.append(f"{path.relative_to(PACKAGE.parent)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                big.append(f"{path.relative_to(PACKAGE.parent)}: class {node.name} has "
                           f"{node.end_lineno - node.lineno + 1} lines")
    assert not big, "split these:\n" + "\n".join(big)
