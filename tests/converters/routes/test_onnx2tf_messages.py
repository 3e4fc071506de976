"""onnx2tf's internal errors become one line naming the ONNX node where it failed.

An error inside onnx2tf's per-node wrapper names the node (`onnx_op_name:`); one outside it
(`KeyError: 'val_0_2'`, a tensor name from torch's dynamo exporter) names none, so the node is
found from the model: the one reading (else writing) the tensor the error names, else the op
whose onnx2tf converter is the trace's last frame."""

import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from converters.routes.onnx2tf import failed_node  # noqa: E402


def _model():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Relu", ["x"], ["val_0_2"], name="node_Relu_0"),
             helper.make_node("Mul", ["val_0_2", "x"], ["val_1"], name="node_Mul_1"),
             helper.make_node("Gather", ["val_1", "idx"], ["val_2"], name="node_Gather_2", axis=1),
             helper.make_node("Add", ["val_2", "val_2"], ["y"], name="node_Add_3")]
    idx = helper.make_tensor("idx", TensorProto.INT64, [4], [0, 1, 2, 3])
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], [idx]))


TRACE = ("ERROR: The trace log is below.\nTraceback (most recent call last):\n"
         '  File "/env/lib/python3.11/site-packages/onnx2tf/onnx2tf.py", line 2300, in convert\n'
         "{frames}{error}\n")
FRAME = '  File "/env/lib/python3.11/site-packages/onnx2tf/ops/{op}.py", line 80, in make_node\n'

CASES = [  # (log, the expected line)
    (TRACE.format(frames=FRAME.format(op="Mul"), error="KeyError: 'val_0_2'"),
     "node node_Mul_1 (Mul): KeyError: 'val_0_2' (onnx2tf lost its tensor 'val_0_2')"),
    (TRACE.format(frames="", error="KeyError: 'val_1'"),
     "node node_Gather_2 (Gather): KeyError: 'val_1' (onnx2tf lost its tensor 'val_1')"),
    (TRACE.format(frames=FRAME.format(op="Gather"), error="IndexError: list index out of range"),
     "node node_Gather_2 (Gather): IndexError: list index out of range"),
    (TRACE.format(frames="", error="KeyError: 'y'"),
     "node node_Add_3 (Add): KeyError: 'y' (onnx2tf lost its tensor 'y')"),
    (TRACE.format(frames=FRAME.format(op="Mul"), error="KeyError: 'val_0_2'") + "ERROR: onnx_op_name: node_Relu_0\n",
     "node node_Relu_0 (Relu): KeyError: 'val_0_2'"),   # onnx2tf named the node: that one
    (TRACE.format(frames="", error="AttributeError: 'NoneType' object has no attribute 'shape'"),
     "onnx2tf failed inside (no node named): AttributeError: 'NoneType' object has no attribute 'shape'"),
]


@pytest.mark.parametrize("log,line", CASES)
def test_internal_errors_name_the_node(tmp_path, log, line):
    path = tmp_path / "onnx2tf.log"
    path.write_text(log)
    got = failed_node(path, _model())
    assert got == line
    assert "\n" not in got


def test_two_nodes_of_the_failing_op_are_counted(tmp_path):
    m = _model()
    m.graph.node[3].op_type = "Mul"   # two Mul nodes now
    path = tmp_path / "onnx2tf.log"
    path.write_text(TRACE.format(frames=FRAME.format(op="Mul"), error="ValueError: bad"))
    assert failed_node(path, m) == "onnx2tf's Mul converter failed (2 Mul nodes): ValueError: bad"
