"""bench on a mixed list: every model its own row, the user's input names carried to each
model, and rows that ran different input shapes say so."""

import json

import pytest

from tests.conftest import DATA, run_cli


def _onnx(path, shape, name="image"):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("ReduceMean", [name], ["m"], axes=[2, 3], keepdims=0),
                               helper.make_node("Softmax", ["m"], ["probs"], axis=1)], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_coreml_package_in_the_list_gets_its_own_row(capsys, tiny):
    code, out, err = run_cli(capsys, "bench", tiny["float"], DATA / "tiny.mlpackage", tiny["uint8"],
                             "--runs", "2", "--warmup", "0")
    assert code == 0, err
    rows = out.splitlines()
    assert any("color_float.tflite" in r for r in rows) and any("color_uint8.tflite" in r for r in rows)
    [row] = [r for r in rows if "tiny.mlpackage" in r]
    assert "not run" in row and "Core ML" in row and "Apple" in row
    code, out, err = run_cli(capsys, "bench", tiny["float"], DATA / "tiny.mlpackage", "--runs", "2",
                             "--warmup", "0", "--json")
    doc = json.loads(out)
    assert code == 0 and [m["status"] for m in doc["models"]] == ["ran", "not run"]
    assert "Core ML" in doc["models"][1]["reason"]


def test_a_model_that_cannot_load_does_not_abort_the_table(capsys, tiny, tmp_path):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"\0\0\0\0TFL3" + b"\0" * 40)
    code, out, err = run_cli(capsys, "bench", tiny["float"], bad, "--runs", "2", "--warmup", "0")
    assert code == 2
    assert any("color_float.tflite" in r and "img/s" not in r for r in out.splitlines()[2:])
    assert any("broken.tflite" in r and "failed" in r for r in out.splitlines())


def test_input_names_and_layout_follow_the_users_flags(capsys, tiny, tmp_path):
    """`image:[1,3,16,16]` (the ONNX's name and NCHW layout) also drives the TFLite models,
    whose input is `serving_default_image:0` in NHWC; each mapping is said."""
    src = _onnx(tmp_path / "tiny.onnx", [1, 3, "h", "w"])
    code, out, err = run_cli(capsys, "bench", src, tiny["float"], tiny["nchw"], "--runs", "2", "--warmup", "0",
                             "--input-shapes", "image:[1,3,16,16]", "--json")
    assert code == 0, err
    doc = json.loads(out)
    ran = {m["model"].rsplit("/", 1)[-1]: m for m in doc["models"]}
    assert ran["tiny.onnx"]["inputs"] == {"image": "1x3x16x16 (user)"}
    assert list(ran["color_float.tflite"]["inputs"].values())[0].startswith("1x16x16x3")
    assert list(ran["color_nchw.tflite"]["inputs"].values())[0].startswith("1x3x16x16")
    notes = " ".join(ran["color_float.tflite"]["input_notes"])
    assert "'serving_default_image:0'" in notes and "NHWC" in notes
    assert not any(m["inputs_differ"] for m in doc["models"])


def test_position_is_the_said_fallback(capsys, tiny):
    code, out, err = run_cli(capsys, "bench", tiny["float"], "--runs", "2", "--warmup", "0",
                             "--input-shapes", "pixels:[1,16,16,3]")
    assert code == 0, err
    assert "by position" in err and "'pixels'" in err
    # a mapped shape the model then refuses: its row names the mapping with the failure
    code, out, err = run_cli(capsys, "bench", tiny["float"], tiny["uint8"], "--runs", "2", "--warmup", "0",
                             "--input-shapes", "pixels:[1,20,20,3]", "--json")
    rows = json.loads(out)["models"]
    assert code == 2 and all(r["status"] == "failed" for r in rows)
    assert all("by position" in r["reason"] and "'pixels'" in r["reason"] for r in rows)


def test_rows_that_ran_different_shapes_say_so(capsys, tiny, tmp_path):
    src = _onnx(tmp_path / "open.onnx", [1, 3, "h", "w"])  # runs a placeholder size
    code, out, err = run_cli(capsys, "bench", src, tiny["float"], "--runs", "2", "--warmup", "0")
    assert code == 0, err
    rows = [r for r in out.splitlines() if ".onnx" in r or ".tflite" in r]
    assert len(rows) == 2 and all("differs" in r for r in rows)
    code, out, err = run_cli(capsys, "bench", src, tiny["float"], "--runs", "2", "--warmup", "0", "--json")
    assert all(m["inputs_differ"] for m in json.loads(out)["models"])
    # the same shapes in NCHW and NHWC are the same work: no mark
    code, out, err = run_cli(capsys, "bench", src, tiny["float"], "--runs", "2", "--warmup", "0",
                             "--input-shapes", "image:[1,3,16,16]")
    assert code == 0 and "differs" not in out


def test_sidecar_recorded_source_name_is_used(capsys, tiny, tmp_path):
    """`convert` records each artefact's input names against the source's (`input_names`);
    bench takes the user's source name through that record before any guess."""
    import shutil

    model = tmp_path / "m.tflite"
    shutil.copy(tiny["float"], model)
    (tmp_path / "m.tflite.edgeport.json").write_text(json.dumps(
        {"input_names": {"names": {"serving_default_image:0": "pixels"}, "matched": "name"}}))
    code, out, err = run_cli(capsys, "bench", model, "--runs", "2", "--warmup", "0",
                             "--input-shapes", "pixels:[1,16,16,3]")
    assert code == 0, err
    assert "'pixels' is this model's 'serving_default_image:0' (recorded in its sidecar)" in err
