"""The tests mirror the package tree, so the tests of a module are found where the module is.

tests/edge/ tests edge/, tests/cli/ tests edgeport/cli/, tests/converters/ tests converters/
and each folder under it names a package of converters/ (tests/converters/validation/ for
converters/validation/, and so on). tests/corpus/ holds the real-world corpus and
tests/project/ the checks that span the whole project (layering, docs, the hostile matrix,
CI scripts). No test module sits at the root of tests/, which keeps the shared helpers
(conftest.py, tiny_*.py) and the data folders. Every test folder is a package, so two test
modules of one name in different folders do not clash.
"""

from pathlib import Path

import pytest

from tests.conftest import REPO

# a test folder -> the package it mirrors; its subfolders mirror that package's subpackages
MIRRORS = {"edge": "edge", "cli": "edgeport/cli", "converters": "converters"}
# test folders that mirror no package, without subfolders
OWN = ("corpus", "project")


def _is_package(folder):
    return (folder / "__init__.py").is_file()


def _folder_problems(tests_dir, repo):
    problems = []
    for top in [*MIRRORS, *OWN]:
        root = tests_dir / top
        if not root.is_dir():
            continue
        for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
            rel = folder.relative_to(tests_dir)
            if not _is_package(folder):
                problems.append(f"tests/{rel.as_posix()}/: no __init__.py (every test folder is a package)")
            if top in OWN:
                if folder != root:
                    problems.append(f"tests/{rel.as_posix()}/: tests/{top}/ has no subfolders")
                continue
            mirrored = repo / MIRRORS[top] / Path(*rel.parts[1:])
            if not _is_package(mirrored):
                problems.append(f"tests/{rel.as_posix()}/: names no package "
                                f"({mirrored.relative_to(repo).as_posix()}/ is not one)")
    return problems


def misplaced(tests_dir, repo):
    """Every way the test tree under `tests_dir` breaks the layout, one line each."""
    problems = []
    for path in sorted(tests_dir.rglob("test_*.py")):
        rel = path.relative_to(tests_dir)
        if len(rel.parts) == 1:
            problems.append(f"tests/{rel.as_posix()}: a test module at the root of tests/ "
                            "(move it to the folder of what it tests)")
        elif rel.parts[0] not in MIRRORS and rel.parts[0] not in OWN:
            problems.append(f"tests/{rel.as_posix()}: tests/{rel.parts[0]}/ is not a test folder "
                            f"(one of {', '.join(sorted([*MIRRORS, *OWN]))})")
    return problems + _folder_problems(tests_dir, repo)


def test_the_tests_mirror_the_packages():
    assert misplaced(REPO / "tests", REPO) == []


def test_every_allowed_folder_holds_tests():
    """The layout is the one in use: each folder this test allows has test modules."""
    for top in [*MIRRORS, *OWN]:
        assert list((REPO / "tests" / top).rglob("test_*.py")), f"tests/{top}/ holds no test module"


def _package(path):
    path.mkdir(parents=True, exist_ok=True)
    (path / "__init__.py").write_text("")
    return path


def _repo(tmp_path):
    """A small project: edge/, edgeport/cli/, converters/ with validation/ and validation/mil/,
    and a test tree that is laid out right."""
    for pkg in ("edge", "edgeport", "edgeport/cli", "converters", "converters/validation",
                "converters/validation/mil"):
        _package(tmp_path / pkg)
    (tmp_path / "edgeport" / "cli" / "args.py").write_text("")
    tests = tmp_path / "tests"
    (tests / "data").mkdir(parents=True)
    (tests / "conftest.py").write_text("")
    (tests / "tiny_onnx.py").write_text("")
    for folder in ("edge", "cli", "converters", "converters/validation", "converters/validation/mil",
                   "corpus", "project"):
        (_package(tests / folder) / f"test_{folder.replace('/', '_')}.py").write_text("")
    return tmp_path


def test_a_right_layout_passes(tmp_path):
    repo = _repo(tmp_path)
    assert misplaced(repo / "tests", repo) == []


# each: what is added to a right layout, and words of the one problem it must give
BROKEN = {
    "module at the root": ("tests/test_x.py", "root of tests/"),
    "module in the data folder": ("tests/data/test_x.py", "tests/data/ is not a test folder"),
    "module in a folder of its own": ("tests/misc/test_x.py", "tests/misc/ is not a test folder"),
    "converters folder naming no package": ("tests/converters/ghost/test_x.py", "converters/ghost/ is not one"),
    "converters folder naming a module": ("tests/converters/formats/test_x.py", "converters/formats/ is not one"),
    "cli folder naming a module": ("tests/cli/args/test_x.py", "edgeport/cli/args/ is not one"),
    "edge folder naming no package": ("tests/edge/mil/test_x.py", "edge/mil/ is not one"),
    "corpus with a subfolder": ("tests/corpus/more/test_x.py", "tests/corpus/ has no subfolders"),
    "project with a subfolder": ("tests/project/docs/test_x.py", "tests/project/ has no subfolders"),
    "empty folder naming no package": ("tests/converters/validation/ghost/", "converters/validation/ghost/ is not one"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_layout_is_named(tmp_path, case):
    repo = _repo(tmp_path)
    added, words = BROKEN[case]
    target = repo / added
    if added.endswith("/"):
        _package(target)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent.name not in ("tests", "data", "misc"):
            (target.parent / "__init__.py").write_text("")
        target.write_text("")
    problems = misplaced(repo / "tests", repo)
    assert len(problems) == 1 and words in problems[0], problems


@pytest.mark.parametrize("folder", ["edge", "cli", "converters/validation", "corpus", "project"])
def test_a_test_folder_that_is_no_package_is_named(tmp_path, folder):
    repo = _repo(tmp_path)
    (repo / "tests" / folder / "__init__.py").unlink()
    problems = misplaced(repo / "tests", repo)
    assert len(problems) == 1 and f"tests/{folder}/: no __init__.py" in problems[0], problems


def _subpackages(root):
    return sorted(p.parent.relative_to(root).as_posix() for p in root.rglob("__init__.py")
                  if p.parent != root)


@pytest.mark.parametrize("top", sorted(MIRRORS))
def test_every_real_subpackage_may_have_tests(tmp_path, top):
    """A test folder for any package in the tree today is accepted (its mirror is found)."""
    package_root = REPO / MIRRORS[top]
    tests = tmp_path / "tests"
    for sub in ["", *_subpackages(package_root)]:
        (_package(tests / top / sub) / "test_x.py").write_text("")
    assert misplaced(tests, REPO) == []


def test_tests_import_their_helpers_from_the_tests_package():
    """A test moved into a folder imports shared helpers as `tests.X`: a bare `from conftest
    import` or `import tiny_onnx` only works from the old flat tests/ and fails when run."""
    import ast

    helpers = {p.stem for p in (REPO / "tests").glob("*.py")} | {
        p.stem for p in (REPO / "tests").rglob("test_*.py")}
    bad = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            bad += [f"{path.relative_to(REPO)}:{node.lineno}: {n}" for n in names
                    if n and n.split(".")[0] in helpers]
    assert not bad, bad
