import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SHARED = REPO.parent / "shared"
CORAL = SHARED / "fixtures" / "coral"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def coral():
    """The Coral fixtures folder in ../shared, or a skip saying why."""
    if not (CORAL / "mobilenet_v1_0.25_128_quant.tflite").is_file():
        pytest.skip(f"shared Coral fixtures not found at {CORAL} (they live beside the checkout)")
    return CORAL


@pytest.fixture(scope="session")
def tiny():
    """Paths of the committed tiny color-classifier models (see scripts/make_tiny_models.py)."""
    return {name: DATA / f"color_{name}.tflite" for name in ("float", "nchw", "uint8", "int8")}


@pytest.fixture(scope="session")
def color_images(tmp_path_factory):
    """Solid-color photos whose class the tiny models must predict: red 0, green 1, blue 2, gray 3."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("colors")
    colors = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230), "gray": (128, 128, 128)}
    for name, rgb in colors.items():
        Image.new("RGB", (40, 30), rgb).save(folder / f"{name}.png")
    return folder


def run_cli(capsys, *argv):
    """Run `edgeport ARGV...` in-process; returns (exit code, stdout, stderr)."""
    from edgeport.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def pytest_collection_modifyitems(config, items):
    """Every test of the real-world corpus carries the `corpus` marker (`run.sh quick` leaves
    them out), wherever its module is."""
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] == "test_corpus":
            item.add_marker(pytest.mark.corpus)


def pytest_terminal_summary(terminalreporter):
    """The bad-input suite counts its cases in its own output."""
    counts = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for rep in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(rep, "nodeid", "")
            if "test_bad_inputs.py::test_bad_input[" in nodeid and getattr(rep, "when", "call") in ("call", "setup"):
                if outcome == "passed" and rep.when != "call":
                    continue
                counts[outcome] = counts.get(outcome, 0) + 1
    if counts:
        terminalreporter.write_line("bad-input cases: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
