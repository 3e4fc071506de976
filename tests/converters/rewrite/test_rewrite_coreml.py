"""The rewrites before onnx2coreml (converters/rewrite/onnx_coreml.py): constants folded (a
Range over a static shape, DequantizeLinear on weights) and QuantizeLinear/DequantizeLinear
on activations expressed as float arithmetic, each on a tiny model built here, checked against
the original, converted to Core ML and validated; a wrong rewrite is shown to fail."""

import json

import numpy as np
import pytest

from tests.converters.rewrite.test_rewrite import _options, _ort


def _range_onnx(path=None, width="w"):
    """y = x + Cast(Range(0, Shape(x)[1], 1)) * 0.5: the Range's limit comes from the input's
    shape, open (`w`) in the model, fixed by --input-shapes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c = {"one": np.array(1, np.int64), "zero": np.array(0, np.int64), "half": np.array(0.5, np.float32),
         "idx": np.array(1, np.int64)}
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "idx"], ["width"], axis=0),
             helper.make_node("Range", ["zero", "width", "one"], ["ramp"]),
             helper.make_node("Cast", ["ramp"], ["rampf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["rampf", "half"], ["offset"]),
             helper.make_node("Add", ["x", "offset"], ["y"])]
    graph = helper.make_graph(nodes, "ramp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in c.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, str(path))
    return model


def _qdq_onnx(path=None, scale=0.05, opset=17):
    """A full-int8 model as tf2onnx writes one: int8 input and state, uint8 output, int8
    weights behind a per-channel DequantizeLinear, QuantizeLinear/DequantizeLinear on every
    activation, the state moved by Concat and Slice in int8."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w = rng.integers(-127, 128, (6, 4)).astype(np.int8)
    c = {"w_q": w, "w_s": np.linspace(0.01, 0.03, 4).astype(np.float32), "w_zp": np.zeros(4, np.int8),
         "in_s": np.array(0.1, np.float32), "in_zp": np.array(-3, np.int8),
         "act_s": np.array(scale, np.float32), "act_zp": np.array(-128, np.int8),
         "out_s": np.array(1 / 256, np.float32), "out_zp": np.array(0, np.uint8),
         "start": np.array([1], np.int64), "end": np.array([3], np.int64), "axis": np.array([1], np.int64)}
    nodes = [helper.make_node("DequantizeLinear", ["x", "in_s", "in_zp"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["wf"], axis=1),
             helper.make_node("MatMul", ["xf", "wf"], ["h"]),
             helper.make_node("Relu", ["h"], ["hr"]),
             helper.make_node("QuantizeLinear", ["hr", "act_s", "act_zp"], ["hq"]),
             helper.make_node("Concat", ["state", "hq"], ["both"], axis=1),
             helper.make_node("Slice", ["both", "start", "end", "axis"], ["state_out"]),
             helper.make_node("DequantizeLinear", ["both", "act_s", "act_zp"], ["bf"]),
             helper.make_node("Sigmoid", ["bf"], ["p"]),
             helper.make_node("QuantizeLinear", ["p", "out_s", "out_zp"], ["y"])]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 6]),
                       helper.make_tensor_value_info("state", TensorProto.INT8, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 6]),
         helper.make_tensor_value_info("state_out", TensorProto.INT8, [1, 2])],
        initializer=[numpy_helper.from_array(v, k) for k, v in c.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, str(path))
    return model


def _int_feeds(model, count=40, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield {i.name: rng.integers(-128, 128, [d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.int8)
               for i in model.graph.input}


def test_range_over_a_static_shape_is_folded_and_computes_the_same():
    from converters.rewrite.onnx_coreml import FoldConstants, unlowered

    model = _range_onnx()
    opts = _options(["x:[1,5]"])
    assert FoldConstants.matches(model, opts) == 1 and unlowered(model) == {"Range": 1}
    new, n, info = FoldConstants.apply(model, opts)
    assert n >= 4 and unlowered(new) == {} and info == {"before": "Range", "after": "none"}
    x = np.random.default_rng(0).normal(size=(1, 5)).astype(np.float32)
    np.testing.assert_array_equal(_ort(new, {"x": x})[0], _ort(model, {"x": x})[0])
    assert unlowered(model) == {"Range": 1}       # the source is left as it was
    assert FoldConstants.matches(new, opts) == 0   # a graph onnx2coreml lowers is not rewritten


def test_a_range_over_a_computed_value_stays_and_is_named(tmp_path, capsys):
    """A Range whose limit is an input cannot be folded: the rewrite changes nothing, and the
    refusal names Range and says why no folding reaches it."""
    import onnx
    from onnx import TensorProto, helper

    from converters.rewrite.onnx_coreml import FoldConstants
    from tests.conftest import run_cli

    model = _range_onnx()
    g = model.graph
    g.input.append(helper.make_tensor_value_info("n", TensorProto.INT64, []))
    g.node[2].input[1] = "n"
    del g.node[:2]
    onnx.checker.check_model(model)
    assert FoldConstants.matches(model, _options(["x:[1,5]", "n:[]"])) == 1
    new, n, _ = FoldConstants.apply(model, _options(["x:[1,5]", "n:[]"]))
    assert n == 0 and new is model
    onnx.save(model, str(tmp_path / "open_range.onnx"))
    code, out, err = run_cli(capsys, "convert", tmp_path / "open_range.onnx", "--to", "coreml", "-o", tmp_path,
                             "--input-shapes", "x:[1,5]", "n:[]")
    assert code != 0 and "no Core ML lowering in onnx2coreml: Range" in err, err
    assert "Range on values computed from the inputs at run time, which no constant folding reaches" in err


def test_weights_behind_dequantize_linear_fold_even_where_the_reference_evaluator_has_no_kernel():
    """onnx.reference has no DequantizeLinear before opset 19: onnxruntime computes it."""
    from converters.rewrite.onnx_coreml import FoldConstants

    model = _qdq_onnx(opset=17)
    new, n, info = FoldConstants.apply(model, _options())
    assert n == 1 and info["after"] == "DequantizeLinear x2, QuantizeLinear x2"
    assert "wf" in {t.name for t in new.graph.initializer}


@pytest.mark.parametrize("scale", [0.05, 0.1, 1 / 64])
def test_quantize_dequantize_as_float_gives_the_same_integers(scale):
    """On 40 random int8 feeds, the float arithmetic (integers held in float32) gives exactly
    the original's integers, including the ties x / s = k + 0.5 (scale 1/64 makes many)."""
    from converters.rewrite.onnx_coreml import QDQAsFloat, unlowered

    model = _qdq_onnx(scale=scale)
    new, n = QDQAsFloat.apply(model, _options())
    assert n == 5 and unlowered(new) == {}
    assert {i.type.tensor_type.elem_type for i in list(new.graph.input) + list(new.graph.output)} == {6}   # int32
    for feed in _int_feeds(model):
        want = _ort(model, feed)
        got = _ort(new, {k: v.astype(np.int32) for k, v in feed.items()})
        for a, b in zip(want, got):
            np.testing.assert_array_equal(a.astype(np.int32), b)


def _round_trip_onnx(scale=0.5):
    """y = DequantizeLinear(QuantizeLinear(x)): int8 at `scale`, zero point 3."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c = {"s": np.array(scale, np.float32), "zp": np.array(3, np.int8)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"])]
    graph = helper.make_graph(nodes, "round_trip", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 301])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 301])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in c.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _ties(scale=0.5):
    """x / scale = k + 0.5 exactly for k from -150 to 150: every tie, and beyond int8's range."""
    return ((np.arange(-150, 151) + 0.5) * scale).astype(np.float32)[None]


def _floor_half_up(model):
    """A wrong rewrite: each Round replaced by Floor(v + 0.5) (ties away from zero, for v >= 0)."""
    from onnx import helper

    wrong = type(model)()
    wrong.CopyFrom(model)
    nodes = []
    for node in wrong.graph.node:
        if node.op_type != "Round":
            nodes.append(node)
            continue
        v, out, half = node.input[0], node.output[0], node.name + "/half"
        wrong.graph.initializer.append(helper.make_tensor(half, 1, [], [0.5]))
        nodes += [helper.make_node("Add", [v, half], [out + "_h"]), helper.make_node("Floor", [out + "_h"], [out])]
    del wrong.graph.node[:]
    wrong.graph.node.extend(nodes)
    return wrong


def test_ties_round_half_to_even_as_onnx_and_a_wrong_rounding_is_caught():
    """On every tie x / s = k + 0.5 the float arithmetic gives ONNX's integers (half to
    even, then clipped to int8); Floor(v + 0.5), a plausible wrong rewrite, does not."""
    from converters.rewrite.onnx_coreml import QDQAsFloat

    model = _round_trip_onnx()
    new, n = QDQAsFloat.apply(model, _options())
    assert n == 2
    x = _ties()
    want = _ort(model, {"x": x})[0]
    assert want[0, 150] == (0 - 3 + 3) * 0.5 and want[0, 151] == (2 - 3 + 3) * 0.5   # 0.5 -> 0, 1.5 -> 2
    np.testing.assert_array_equal(_ort(new, {"x": x})[0], want)
    wrong = _floor_half_up(new)
    assert (_ort(wrong, {"x": x})[0] != want).sum() > 50


def test_an_integer_tensor_read_by_arithmetic_keeps_its_casts():
    """Integers held in float32 are exact only through ops that move them: an int8 Add (which
    wraps around) keeps the graph's integer types and the casts."""
    from onnx import TensorProto, helper

    from converters.rewrite.onnx_coreml import QDQAsFloat

    model = _qdq_onnx()
    g = model.graph
    g.node.append(helper.make_node("Add", ["hq", "hq"], ["twice"]))
    g.output.append(helper.make_tensor_value_info("twice", TensorProto.INT8, [1, 4]))
    new, n = QDQAsFloat.apply(model, _options())
    assert n == 5 and "Cast" in {x.op_type for x in new.graph.node}
    assert new.graph.input[0].type.tensor_type.elem_type == TensorProto.INT8
    for feed in _int_feeds(model, 10):
        for a, b in zip(_ort(model, feed), _ort(new, feed)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["range", "qdq", "gate", "reverse"])
def test_onnx_converts_to_coreml_validated_against_the_original(name, tmp_path, capsys):
    from tests.conftest import run_cli

    src = tmp_path / f"{name}.onnx"
    flags = {"range": ["--input-shapes", "x:[1,5]"], "gate": ["--val-range", "[-4,4]"]}.get(name, [])
    if name == "reverse":
        import onnx

        onnx.save(_reverse_onnx([2, 5, 1]), str(src))
    else:
        {"range": _range_onnx, "qdq": _qdq_onnx, "gate": _gate_onnx}[name](src)
    code, out, err = run_cli(capsys, "convert", src, "--to", "coreml", "-o", tmp_path / "out", "--json", *flags)
    assert code == 0, err
    hop = json.loads(out)["models"][0]["artefacts"][0]
    assert hop["validation"]["passed"] is True, hop
    assert any(r.split()[0] in ("folded", "expressed", "computed") for r in hop["rewrites"]), hop["rewrites"]
    code, out, err = run_cli(capsys, "convert", src, "--to", "coreml", "-o", tmp_path / "off", "--no-rewrite",
                             *flags)
    assert code != 0 and "needs the rewrite" in err and "--no-rewrite" in err, err


def _gate_onnx(path=None, else_shape=(1, 1)):
    """openWakeWord's verifier gate: p = Sigmoid(x w); if p >= 0.5 a second score from x,
    else p itself. The condition is data: it cannot be folded."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    c = {"w": rng.normal(0, 0.5, (4, 1)).astype(np.float32), "v": rng.normal(0, 0.5, (4, 1)).astype(np.float32),
         "half": np.array(0.5, np.float32), "scalar": np.zeros(0, np.int64)}
    then = helper.make_graph([helper.make_node("MatMul", ["x", "v"], ["t0"]), helper.make_node("Tanh", ["t0"], ["t"])],
                             "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 1])])
    other = [helper.make_node("Identity", ["p"], ["e"])] if else_shape == (1, 1) else \
        [helper.make_node("ReduceMean", ["x"], ["e"], keepdims=0)]
    els = helper.make_graph(other, "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, list(else_shape))])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["s"]), helper.make_node("Sigmoid", ["s"], ["p"]),
             helper.make_node("GreaterOrEqual", ["p", "half"], ["ge"]),
             helper.make_node("Reshape", ["ge", "scalar"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=els)]
    graph = helper.make_graph(nodes, "gate", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in c.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, str(path))
    return model


def _gate_inputs():
    return np.random.default_rng(5).normal(0, 2, (60, 1, 4)).astype(np.float32)


def test_an_if_on_data_becomes_both_branches_and_a_where():
    """On inputs that take each branch, the Where gives the If's values exactly."""
    from converters.rewrite.onnx_coreml import IfAsWhere, unlowered

    model = _gate_onnx()
    assert IfAsWhere.matches(model) == 1 and unlowered(model) == {"If": 1}
    new, n = IfAsWhere.apply(model)
    assert n == 1 and unlowered(new) == {}
    assert "Reshape" not in {x.op_type for x in new.graph.node}   # the squeeze to a scalar went
    w = next(t for t in model.graph.initializer if t.name == "w")
    from onnx import numpy_helper

    taken = set()
    for x in _gate_inputs():
        want = _ort(model, {"x": x})[0]
        taken.add(bool(1 / (1 + np.exp(-(x @ numpy_helper.to_array(w)))) >= 0.5))
        np.testing.assert_array_equal(_ort(new, {"x": x})[0], want)
    assert taken == {True, False}      # both branches were exercised


def test_an_if_whose_branches_differ_in_shape_is_left_alone():
    """Where would broadcast a [] against a [1, 1]: the If keeps its own semantics (and the
    route still names If)."""
    from converters.rewrite.onnx_coreml import IfAsWhere

    model = _gate_onnx(else_shape=())
    new, n = IfAsWhere.apply(model)
    assert (new, n) == (model, 0)


def test_selecting_the_wrong_branch_is_caught():
    """A wrong rewrite (the Where's branches swapped) gives other values on these inputs."""
    from converters.rewrite.onnx_coreml import IfAsWhere

    model = _gate_onnx()
    new, _ = IfAsWhere.apply(model)
    where = next(n for n in new.graph.node if n.op_type == "Where")
    where.input[1], where.input[2] = where.input[2], where.input[1]
    assert any((_ort(new, {"x": x})[0] != _ort(model, {"x": x})[0]).any() for x in _gate_inputs())


def _reverse_onnx(lens, steps=6, batch=3):
    """ReverseSequence over x [steps, batch, 2] (time axis 0, batch axis 1), as tf2onnx
    writes tf.reverse, with constant lengths."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReverseSequence", ["x", "lens"], ["r"], time_axis=0, batch_axis=1),
             helper.make_node("Relu", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "reverse", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, batch, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [steps, batch, 2])],
                              initializer=[numpy_helper.from_array(np.array(lens, np.int64), "lens")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("lens", [[6, 6, 6], [4, 4, 4], [6, 1, 3], [2, 5, 1]])
def test_reverse_sequence_becomes_a_gather_with_the_same_values(lens):
    from converters.rewrite.onnx_coreml import ReverseAsGather, unlowered

    model = _reverse_onnx(lens)
    assert ReverseAsGather.matches(model) == 1 and unlowered(model) == {"ReverseSequence": 1}
    new, n = ReverseAsGather.apply(model)
    assert n == 1 and unlowered(new) == {}
    x = np.random.default_rng(6).normal(size=(6, 3, 2)).astype(np.float32)
    np.testing.assert_array_equal(_ort(new, {"x": x})[0], _ort(model, {"x": x})[0])


def test_reversing_the_whole_axis_instead_of_each_length_is_caught():
    """A wrong rewrite (every entry reversed over all steps, ignoring the lengths) differs."""
    from converters.rewrite.onnx_coreml import ReverseAsGather

    partial = _reverse_onnx([2, 5, 1])
    wrong, _ = ReverseAsGather.apply(_reverse_onnx([6, 6, 6]))
    x = np.random.default_rng(6).normal(size=(6, 3, 2)).astype(np.float32)
    assert (_ort(wrong, {"x": x})[0] != _ort(partial, {"x": x})[0]).any()
