"""The target table is the one place a target lives: nothing outside ``rmt_deploy/targets`` names
one, and every list a user sees (help, doctor, presets, reports) is read from the table."""
from __future__ import annotations

import ast
from pathlib import Path

from rmt_deploy.rewrite import ENCODINGS
from rmt_deploy.targets import TARGETS, packages

PACKAGE = Path(__file__).resolve().parents[1] / "rmt_deploy"
# Strings outside targets/ that equal a target's name for another reason, each with that reason.
NOT_A_TARGET = {
    ("telemetry.py", "openvino"): "the openvino Python package, which reports through openvino-telemetry",
    ("rewrite/__init__.py", "executorch"): "the xnnpack encoding's name before 0.12, still accepted",
    **{(f"rewrite/{name}", e): "a deploy-form encoding, named for the runtime it is for"
       for name in ("deploy.py", "backbone.py", "chunks.py", "__init__.py") for e in ENCODINGS},
}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def target_literals(root: Path = PACKAGE) -> list[str]:
    """``file:line: 'name'`` for each string constant outside targets/ (docstrings aside) that is a
    target's name or alias."""
    names = {n for t in TARGETS.values() for n in (t.name, *t.aliases)}
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("targets/"):
            continue
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
                    and id(node) not in skip and (rel, node.value) not in NOT_A_TARGET):
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    return found


def test_no_module_outside_targets_names_a_target():
    assert target_literals() == [], "a target's fact belongs in its own module and the table (Target attributes)"


def test_the_scan_finds_a_target_name_where_one_hides(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "bad.py").write_text('"""Docstrings may say onnx."""\nif target.name == "coreml":\n    pass\n')
    assert target_literals(tmp_path) == ["jobs/bad.py:2: 'coreml'"]


def test_every_backend_package_is_declared_once_by_the_table():
    dists = [p.dist for p in packages()]
    assert len(dists) == len(set(dists))
    assert [t.name for t in TARGETS.values() if t.extra and not t.packages] == []  # doctor and reports name them
