"""inspect --edgetpu's verdict line and folded rows, inspect's suggestions, classify's warning
on models without a class vector."""

import pytest

from tests.conftest import DATA, run_cli


def test_inspect_edgetpu_verdict_not_quantized(capsys):
    code, out, err = run_cli(capsys, "inspect", DATA / "color_float.tflite", "--edgetpu")
    assert code == 0
    assert out.splitlines()[1].startswith("Edge TPU: not quantized")


def test_inspect_edgetpu_verdict_quantized_and_compiled(coral, capsys):
    code, out, err = run_cli(capsys, "inspect", coral / "mobilenet_v1_0.25_128_quant.tflite",
                             "--edgetpu")
    assert code == 0 and out.splitlines()[1] == "Edge TPU: 31 of 31 ops predicted on the Edge TPU"
    code, out, err = run_cli(capsys, "inspect", coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite",
                             "--edgetpu")
    assert code == 0 and out.splitlines()[1] == "Edge TPU: already compiled for the Edge TPU"


def test_fold_repeated_rows():
    from converters.validation.inspect import _fold

    text = "\n".join(["  on the CPU:"] + [
        f"    #{i} CONV_2D (prefix): unsupported data type - tensor 't{i}' is FLOAT32"
        for i in range(6)] + ["    #6 ADD (prefix): unsupported data type - tensor 'a' is FLOAT32",
                              "  end"])
    folded = _fold(text).splitlines()
    assert folded[1] == ("    #0, #1, #2, #3, ... CONV_2D x6 (prefix): unsupported data type - "
                         "tensor 't0' is FLOAT32 (first of them)")
    assert folded[2] == "    #6 ADD (prefix): unsupported data type - tensor 'a' is FLOAT32"
    assert folded[3] == "  end" and len(folded) == 4


def test_inspect_non_tflite_suggests_only_existing_routes(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    code, out, err = run_cli(capsys, "inspect", path)
    assert code == 2
    from converters.registry import plan_route

    assert "edgeport check" in err
    # the suggested route is one that plans (ONNX -> TFLite exists, through onnx2tf)
    assert "--to tflite" in err and plan_route("onnx", "tflite")


def test_class_vector_warning():
    from edge.classify import class_vector_warning

    class Fake:
        def __init__(self, *shapes):
            self.shapes = shapes

        def get_output_details(self):
            return [{"name": f"o{i}", "shape": s} for i, s in enumerate(self.shapes)]

    assert class_vector_warning(Fake([1, 1001])) == ""
    assert class_vector_warning(Fake([1001])) == ""
    w = class_vector_warning(Fake([1, 896, 16], [1, 896, 1]))
    assert "no class-vector output (2 output(s): o0[1, 896, 16], o1[1, 896, 1])" in w
    assert class_vector_warning(Fake([1, 256, 256, 1]))  # a segmentation mask


def test_classify_warns_on_a_detector(tmp_path, capsys):
    """A tiny float TFLite model with two outputs (boxes and scores), like a detector."""
    tf = pytest.importorskip("tensorflow")
    from tests.conftest import CORAL

    if not CORAL.is_dir():
        pytest.skip(f"shared Coral fixtures (photos) not found at {CORAL}")

    class Det(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
        def __call__(self, x):
            boxes = tf.reshape(tf.nn.avg_pool2d(x, 4, 4, "VALID"), [1, 16, 3])
            return {"boxes": boxes, "scores": tf.reduce_mean(boxes, axis=2, keepdims=True)}

    m = Det()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.__call__.get_concrete_function()], m)
    path = tmp_path / "det.tflite"
    path.write_bytes(conv.convert())
    code, out, err = run_cli(capsys, "classify", "-m", path, "-i", CORAL / "grace_hopper.bmp")
    assert "no class-vector output" in err, err


def test_classify_open_image_dims_need_a_shape(tmp_path, capsys):
    tf = pytest.importorskip("tensorflow")
    from tests.conftest import CORAL

    if not CORAL.is_dir():
        pytest.skip(f"shared Coral fixtures (photos) not found at {CORAL}")

    class Net(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)])
        def __call__(self, x):
            return tf.nn.softmax(tf.reduce_mean(x, axis=[1, 2]))

    m = Net()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.__call__.get_concrete_function()], m)
    path = tmp_path / "open.tflite"
    path.write_bytes(conv.convert())
    code, out, err = run_cli(capsys, "classify", "-m", path, "-i", CORAL / "grace_hopper.bmp")
    assert code == 2 and "open dimensions [1,?,?,3]" in err and "--input-shapes" in err
    code, out, err = run_cli(capsys, "classify", "-m", path, "-i", CORAL / "grace_hopper.bmp",
                             "--input-shapes", "[1,64,64,3]")
    assert code == 0, err
    assert "RESULTS" in out
