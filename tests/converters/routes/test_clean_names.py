"""tf2onnx's input renames reach nested graphs (If/Loop/Scan)."""

import numpy as np
import pytest


def _if_model():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("serving_default_x:0", TensorProto.FLOAT, [2])
    cond = helper.make_tensor_value_info("flag:0", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("out:0", TensorProto.FLOAT, [2])
    # both branches read the outer input by name
    then_g = helper.make_graph([helper.make_node("Neg", ["serving_default_x:0"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    else_g = helper.make_graph([helper.make_node("Identity", ["serving_default_x:0"], ["e"])], "else",
                               [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    node = helper.make_node("If", ["flag:0"], ["out:0"], then_branch=then_g, else_branch=else_g)
    g = helper.make_graph([node], "g", [x, cond], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_renames_reach_if_branches():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from converters.routes.tf2onnx import clean_names

    m = clean_names(_if_model())
    onnx.checker.check_model(m, full_check=True)
    assert [i.name for i in m.graph.input] == ["x", "flag"]
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.array([1.0, -2.0], np.float32)
    (y,) = s.run(None, {"x": x, "flag": np.array(True)})
    assert np.array_equal(y, -x)
    (y,) = s.run(None, {"x": x, "flag": np.array(False)})
    assert np.array_equal(y, x)


def test_renames_skipped_when_a_branch_takes_the_name():
    onnx = pytest.importorskip("onnx")

    from converters.routes.tf2onnx import clean_names

    m = _if_model()
    then_g = m.graph.node[0].attribute[0].g
    then_g.node[0].output[0] = "x"  # the new name is already taken inside a branch
    then_g.output[0].name = "x"
    m = clean_names(m)
    assert "serving_default_x:0" in [i.name for i in m.graph.input]
    onnx.checker.check_model(m)
