import json

import numpy as np
import pytest

from edge.bench import benchmark, format_table, latency_stats
from edge.errors import InputError
from tests.conftest import run_cli


def test_latency_stats_hand_computed():
    s = latency_stats([0.001, 0.002, 0.003, 0.004])  # seconds
    assert s["runs"] == 4 and s["min_ms"] == 1.0 and s["max_ms"] == 4.0
    assert s["median_ms"] == 2.5 and s["mean_ms"] == 2.5
    assert s["p90_ms"] == pytest.approx(3.7) and s["p99_ms"] == pytest.approx(3.97)
    assert s["std_ms"] == pytest.approx(np.std([1, 2, 3, 4]))
    assert s["throughput_ips"] == pytest.approx(400.0)
    with pytest.raises(InputError):
        latency_stats([])


def test_benchmark_tflite(tiny):
    r = benchmark(str(tiny["uint8"]), runs=20, warmup=2, threads=1)
    assert r["runs"] == 20 and r["runtime"] == "ai_edge_litert" and r["device"] == "cpu"
    assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert r["load_ms"] > 0 and r["first_inference_ms"] > 0 and r["size_bytes"] > 1000
    assert "color_uint8.tflite" in format_table([r])


def test_benchmark_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "relu.onnx")
    r = benchmark(str(tmp_path / "relu.onnx"), runs=5, warmup=0)
    assert r["runtime"].startswith("onnxruntime") and r["runs"] == 5


def test_bench_cli_json_threads_and_plot(capsys, tiny, tmp_path):
    pytest.importorskip("matplotlib")
    code, out, _ = run_cli(capsys, "bench", tiny["float"], tiny["int8"], "--runs", "5", "--warmup", "1",
                           "--threads", "1", "2", "--json", "--plot", tmp_path / "p.png")
    assert code == 0
    doc = json.loads(out)
    assert doc["command"] == "bench" and doc["exit_code"] == 0 and doc["plot"] == str(tmp_path / "p.png")
    rows = doc["models"]
    assert [(r["model"].rsplit("/", 1)[1], r["threads"]) for r in rows] == [
        ("color_float.tflite", 1), ("color_float.tflite", 2), ("color_int8.tflite", 1), ("color_int8.tflite", 2)]
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_cli_table_and_errors(capsys, tiny, tmp_path):
    code, out, _ = run_cli(capsys, "bench", tiny["nchw"], "--runs", "3")
    assert code == 0 and "median" in out and "color_nchw.tflite" in out
    (tmp_path / "x.bin").write_bytes(b"garbage!" * 4)
    code, _, err = run_cli(capsys, "bench", tmp_path / "x.bin")
    assert code == 2 and "neither a TFLite nor an ONNX" in err
    code, _, err = run_cli(capsys, "bench", tiny["float"], "--runs", "0")
    assert code == 2 and err.startswith("error: argument --runs: '0' is out of range")
    code, _, err = run_cli(capsys, "bench", tiny["float"], "--threads", "nan")
    assert code == 2 and "--threads: 'nan' is not an integer" in err
