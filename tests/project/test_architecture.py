"""The layering rules: which room may import which, and where the command line lives.

edge/ stays light and never reaches into converters/ or a framework; each room of
converters/ imports only the rooms its package docstring names; argparse lives in edgeport/.
"""
import ast
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

FORBIDDEN = ("converters", "tensorflow", "torch", "onnx", "coremltools", "tf2onnx", "keras")
FRAMEWORKS = ("tensorflow", "torch", "onnx", "coremltools", "tf2onnx", "keras", "onnxruntime")

ROOMS = ("converters.routes", "converters.quantize", "converters.edgetpu", "converters.validation",
         "converters.toolenv", "converters.rewrite")
TOP_ROOMS = ("edge", "converters", "edgeport")


def declared_rules():
    """The one declaration of the room rules: the `Imports:` line of each room's __init__
    docstring. `converters.routes (pipeline, registry)` in the converters root's line means
    only those root modules may reach into that room. Returns (allowed, root_reach)."""
    allowed, root_reach = {}, {}
    for room in TOP_ROOMS + ROOMS:
        init = REPO / room.replace(".", "/") / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        line = next((ln for ln in doc.splitlines() if ln.startswith("Imports:")), None)
        assert line is not None, f"{init}: its docstring declares no 'Imports:' line"
        allowed[room] = set()
        for item in re.findall(r"([\w.]+)(?:\s*\(([^)]*)\))?", line[len("Imports:"):]):
            name, only = item
            if name in ("no", "project", "room"):
                continue
            allowed[room].add(name)
            if only:
                root_reach[name] = {m.strip() for m in only.split(",")}
    return allowed, root_reach


ALLOWED, ROOT_REACH = declared_rules()


def room_of(module):
    for r in ROOMS:
        if module == r or module.startswith(r + "."):
            return r
    return module.split(".")[0]


def project_modules():
    for top in ("edge", "converters", "edgeport"):
        for path in sorted((REPO / top).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def imports_of(path, package):
    """Absolute names imported by the file (relative imports resolved against `package`),
    including the modules the registry imports by name (CONVERSION_MODULES)."""
    out = []
    if path.name == "registry.py" and package == "converters":
        from converters.registry import CONVERSION_MODULES

        out += list(CONVERSION_MODULES)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package.split(".")
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            out.append(base)
            out += [f"{base}.{a.name}" for a in node.names]
    return out


def frameworks_loaded_by(code):
    """The frameworks in sys.modules after a fresh interpreter runs `code`."""
    code += f"\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORKS!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.strip()


def test_edge_sources_import_nothing_forbidden():
    bad = []
    for path in sorted((REPO / "edge").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            bad += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN + ("edgeport",)]
    # tensorflow is allowed only as the named last-resort interpreter backend, via importlib
    assert bad == []


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_each_room_imports_only_what_its_docstring_allows(room):
    bad = []
    for name, path in project_modules():
        if room_of(name) != room:
            continue
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for imported in imports_of(path, package):
            if imported.split(".")[0] not in ("edge", "converters", "edgeport"):
                continue
            target = room_of(imported)
            if target == room:
                continue
            if target not in ALLOWED[room]:
                bad.append(f"{name} imports {imported}")
            elif room == "converters" and target in ROOT_REACH and name.split(".")[-1] not in ROOT_REACH[target]:
                bad.append(f"{name} imports {imported} (only {sorted(ROOT_REACH[target])} may)")
            elif room != "edgeport" and target == "edgeport":
                bad.append(f"{name} imports {imported} (library code never reaches the command line)")
    assert bad == []


def test_every_room_says_what_it_may_import():
    for room in ("edge", "converters") + ROOMS + ("edgeport.cli",):
        init = REPO / room.replace(".", "/") / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc.lower() or "command line" in doc.lower(), f"{init}: docstring says nothing of its imports"


def test_argparse_only_in_the_command_line_package():
    bad = [name for name, path in project_modules()
           if not name.startswith("edgeport") and "argparse" in imports_of(path, name)]
    assert bad == []


# what the device-side commands may take from converters/: pure numpy modules only
DEVICE_COMMANDS = {"classify": {"converters.validation.signature"}, "bench": {"converters.validation.signature",
                                                                    "converters.validation.input_match"}}


@pytest.mark.parametrize("cmd", sorted(DEVICE_COMMANDS))
def test_device_commands_import_no_converters(cmd):
    path = REPO / "edgeport" / "cli" / f"{cmd}.py"
    used = {i for i in imports_of(path, "edgeport.cli") if i.split(".")[0] == "converters"}
    allowed = DEVICE_COMMANDS[cmd]
    assert {i for i in used if not any(i == a or i.startswith(a + ".") for a in allowed)} == set()
    for module in allowed:  # and those import nothing but numpy and edge/ at the top
        assert frameworks_loaded_by(f"import {module}") == "[]", module


def test_import_edge_loads_no_framework():
    code = ("import sys, edge, edge.classify, edge.interpreter, edge.bench, edge.preprocess\n"
            f"print([m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_classify_help_loads_no_framework():
    assert frameworks_loaded_by("import contextlib, io\nfrom edgeport.cli import classify_main\n"
                                "with contextlib.redirect_stdout(io.StringIO()):\n"
                                "    try:\n        classify_main(['--help'])\n"
                                "    except SystemExit:\n        pass") == "[]"


def test_converters_modules_import_no_framework_at_top():
    assert frameworks_loaded_by("import importlib, pkgutil, converters\n"
                                "for m in pkgutil.walk_packages(converters.__path__, 'converters.'):\n"
                                "    importlib.import_module(m.name)") == "[]"


def test_every_package_is_installed():
    """pyproject's package list names every folder with an __init__.py (a wheel would miss it)."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for top in ("edge", "converters", "edgeport")
             for p in (REPO / top).rglob("__init__.py")}
    assert found - listed == set()
