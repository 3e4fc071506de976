"""The layering rules: edge/ stays light and never reaches into converters/ or a framework."""
import ast
import subprocess
import sys

from conftest import REPO

FORBIDDEN = ("converters", "tensorflow", "torch", "onnx", "coremltools", "tf2onnx", "keras")


def test_edge_sources_import_nothing_forbidden():
    bad = []
    for path in sorted((REPO / "edge").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            bad += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    # tensorflow is allowed only as the named last-resort interpreter backend, via importlib
    assert bad == []


def test_import_edge_loads_no_framework():
    code = ("import sys, edge, edge.classify, edge.interpreter, edge.bench, edge.preprocess\n"
            f"print([m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_converters_modules_import_no_framework_at_top():
    code = ("import sys, importlib, pkgutil, converters\n"
            "for m in pkgutil.iter_modules(converters.__path__):\n"
            "    importlib.import_module('converters.' + m.name)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow','torch','onnx','coremltools','tf2onnx','keras','onnxruntime'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
