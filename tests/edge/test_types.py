"""edge/ is typed: every function annotated, mypy clean, annotations free at import time.

The mypy settings (pyproject.toml [tool.mypy]: disallow_untyped_defs, check_untyped_defs) make
an unannotated or ill-typed function in edge/ an error; this runs that check with the tests.
"""

import ast
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EDGE_MODULES = sorted(p.name for p in (ROOT / "edge").glob("*.py"))


@pytest.mark.parametrize("name", EDGE_MODULES)
def test_edge_module_postpones_annotations(name):
    """Annotations in edge/ are never evaluated at import (a device's cold start pays nothing
    for them), so typing-only names can live under TYPE_CHECKING."""
    tree = ast.parse((ROOT / "edge" / name).read_text(encoding="utf-8"))
    has_defs = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.AnnAssign))
                   for n in ast.walk(tree))
    futures = {a.name for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"
               for a in n.names}
    assert not has_defs or "annotations" in futures, \
        f"edge/{name} has definitions but no 'from __future__ import annotations'"


@pytest.mark.parametrize("name", EDGE_MODULES)
def test_edge_functions_are_annotated(name):
    """Every function and method of edge/ declares its parameter and return types (the same
    rule as mypy's disallow_untyped_defs, checked without mypy)."""
    tree = ast.parse((ROOT / "edge" / name).read_text(encoding="utf-8"))
    missing = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        args = node.args
        params = [*args.posonlyargs, *args.args, *args.kwonlyargs,
                  *([args.vararg] if args.vararg else []), *([args.kwarg] if args.kwarg else [])]
        unannotated = [a.arg for a in params if a.annotation is None and a.arg not in ("self", "cls")]
        if unannotated or node.returns is None:
            missing.append(f"{node.name} (line {node.lineno})")
    assert not missing, f"edge/{name}: functions without full type hints: {', '.join(missing)}"


@pytest.mark.slow   # 3-7 s end to end: left out of the quick loop, run by CI
def test_mypy_is_clean_on_edge(tmp_path):
    api = pytest.importorskip("mypy.api", reason="mypy is in the 'dev' extra")
    cwd = os.getcwd()
    os.chdir(ROOT)  # pyproject.toml's [tool.mypy] names the files and the settings
    try:
        out, err, status = api.run(["--cache-dir", str(tmp_path / "mypy-cache")])
    finally:
        os.chdir(cwd)
    assert status == 0, f"mypy found errors in edge/:\n{out}{err}"
