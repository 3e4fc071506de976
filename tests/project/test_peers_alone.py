"""scripts/peers_alone.py without the corpus: its cells' bookkeeping, the table, the row flags it
gives the peers, and one real peer cell (convert_onnx_models_to_ort) on a tiny ONNX model made here."""

import importlib.util
import json

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def pa():
    spec = importlib.util.spec_from_file_location("peers_alone", REPO / "scripts" / "peers_alone.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_row_shapes_named_and_unnamed(pa):
    assert pa.row_shapes(["--input-shapes", "x:[1,3,48,192]", "s:[2,1,128]", "--fix", "sr=1"]) == {
        "x": [1, 3, 48, 192], "s": [2, 1, 128]}
    assert pa.row_shapes(["--input-shapes", "[1,1280]", "--val-range", "[-1,1]"]) == {"": [1, 1280]}
    assert pa.row_shapes(["--val-range", "[-1,1]"]) == {}


def test_last_error_is_one_printable_line(pa):
    text = "progress 1\nTraceback ...\nValueError: bad \x1b[31mop\x1b[0m\nsome trailing log\n"
    assert pa.last_error(text) == "ValueError: bad ?[31mop?[0m"
    assert pa.last_error("") == "(no output)"


def test_cache_per_model_round_trip_and_table(pa, tmp_path):
    cells = {"a/onnx": {"status": pa.MADE, "validation": "validated"},
             "a/coreml": {"status": pa.MADE, "validation": "not validated: structure only"},
             "a/edgetpu": {"status": pa.NOT_RUN, "why": "no Edge TPU compiler here"},
             "b/ort": {"status": pa.MADE, "validation": "FAILED: MISMATCH"},
             "b/tflite": {"status": pa.REFUSED, "why": "ValueError: x"},
             "b/coreml": {"status": pa.TIMEOUT, "why": "over 1 s"}}
    pa.save_cache(tmp_path, cells, "a")
    pa.save_cache(tmp_path, cells, "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]
    assert json.loads((tmp_path / "a.json").read_text()).keys() == {"a/onnx", "a/coreml", "a/edgetpu"}
    assert pa.load_cache(tmp_path) == cells
    text = pa.table(cells)
    assert "| onnx (tf2onnx) | 1 | 0 | 1 | 0 | 0 | 0 |" in text
    assert "| coreml (onnx2coreml) | 0 | 0 | 1 | 0 | 1 | 0 |" in text
    assert "| **total** | 1 | 1 | 3 | 1 | 1 | 1 |" in text
    assert "| **total** | 1 | 0 | 2 | 0 | 0 | 1 |" in pa.table(cells, {"a"})


class Rows:
    """A stand-in for the corpus test module: one row, no data."""
    AUDIO = ["--data", "<audio>"]
    CASES = {"m": ("k", [], [], {}, {"ort": "validated", "edgetpu": "refused: "})}


def test_cells_no_peer_can_run_here_are_not_run_saying_why(pa, tmp_path):
    assert pa.convert_cell(Rows, "m", "m.tflite", "edgetpu", tmp_path, 5, None, False)[:2] == (
        pa.NOT_RUN, "no Edge TPU compiler here")
    assert pa.convert_cell(Rows, "m", "m.jit", "onnx", tmp_path, 5, None, False)[0] == pa.NOT_RUN
    assert pa.convert_cell(Rows, "m", "m.onnx", "tflite", tmp_path, 5, None, False)[:2] == (
        pa.NOT_RUN, "onnx2tf env not built")
    assert pa.convert_cell(Rows, "m", "m.tflite", "tflite-int8", tmp_path, 5, None, False)[:2] == (
        pa.NOT_RUN, "the corpus row has no calibration data")
    assert pa.convert_cell(Rows, "m", "m.tflite", "ort", tmp_path, 5, None, False)[0] == pa.REFUSED


@pytest.mark.slow   # two child processes each importing ONNX Runtime: ~40 s on a busy machine
def test_a_real_peer_cell_is_made_and_loads_or_refused(pa, tmp_path):
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    onnx = tmp_path / "tiny.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(onnx))
    status, why, artefact = pa.convert_cell(Rows, "m", str(onnx), "ort", tmp_path, 120, None, False)
    assert (status, why) == (pa.MADE, "") and artefact.endswith(".ort")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    status, why, _ = pa.convert_cell(Rows, "m", str(broken), "ort", tmp_path / "b", 120, None, False)
    assert status == pa.REFUSED and why


def test_run_says_made_refused_crashed_or_timeout(pa):
    import signal
    import sys

    py = sys.executable
    assert pa.run([py, "-c", "pass"], 60) == (pa.MADE, "")
    assert pa.run([py, "-c", "raise ValueError('no lowering for Foo')"], 60) == (
        pa.REFUSED, "ValueError: no lowering for Foo")
    assert pa.run([py, "-c", f"import os; os.kill(os.getpid(), {int(signal.SIGSEGV)})"], 60) == (
        pa.REFUSED, f"crashed (signal {int(signal.SIGSEGV)})")
    assert pa.run([py, "-c", "import time; time.sleep(30)"], 1)[0] == pa.TIMEOUT


def test_closing_counts_edgeport_before_after_and_the_peer_on_the_same_cells(pa):
    cache = {"mp_hand_recrop/onnx": {"status": pa.MADE, "validation": "validated"},
             "micro_alexa/onnx": {"status": pa.REFUSED, "why": "IndexError"}}   # refused before, validated after
    text = pa.closing(cache)
    assert "2 models in both corpus tables" in text
    assert "| onnx (tf2onnx) | 2 | 1 | 2 | 1 | 1 / 1 / 0 / 0 |" in text
    assert "| ort (convert_onnx_models_to_ort) | 0 | 0 | 0 | 0 | 0 / 0 / 0 / 0 |" in text
