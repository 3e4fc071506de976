"""Shape arguments computed from constants become constants, and an LSTM output's Squeeze a
Reshape (converters/rewrite/onnx_fold.py), for onnx2tf: on a tiny model whose reflection Pad
takes pads computed as silero-vad's STFT does (ConstantOfShape, Concat, Reshape, Slice,
Transpose, Cast) before an LSTM, rewritten (with the LSTM unrolling after them) and compared
with the original in ONNX Runtime."""

import numpy as np
import pytest


def _computed_pads_onnx(pad=3, width=16, batch="n", lstm=False):
    """x [batch, width] -> reflection Pad of `pad` on each side of the last axis, its pads
    computed by nodes from constants -> the two halves' squares added (an STFT's magnitude)."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.int64)))

    nodes = [const("two", [2]), const("lead", [pad, pad]), const("shape22", [2, 2]),
             const("s0", [-1]), const("e0", [-(2 ** 63)]), const("a0", [0]), const("st", [-1]),
             const("flat", [-1]),
             helper.make_node("ConstantOfShape", ["two"], ["zeros"], value=helper.make_tensor("", TensorProto.INT64, [1], [0])),
             helper.make_node("Concat", ["lead", "zeros"], ["cat"], axis=0),
             helper.make_node("Reshape", ["cat", "shape22"], ["r"]),
             helper.make_node("Slice", ["r", "s0", "e0", "a0", "st"], ["rev"]),
             helper.make_node("Transpose", ["rev"], ["tr"], perm=[1, 0]),
             helper.make_node("Reshape", ["tr", "flat"], ["pads64"]),
             helper.make_node("Cast", ["pads64"], ["pads"], to=TensorProto.INT64),
             helper.make_node("Pad", ["x", "pads"], ["padded"], mode="reflect"),
             const("h0", [0]), const("h1", [width // 2 + pad]), const("h2", [2 ** 62]), const("ax", [1]),
             helper.make_node("Slice", ["padded", "h0", "h1", "ax"], ["left"]),
             helper.make_node("Slice", ["padded", "h1", "h2", "ax"], ["right"]),
             helper.make_node("Mul", ["left", "left"], ["l2"]), helper.make_node("Mul", ["right", "right"], ["r2"]),
             helper.make_node("Add", ["l2", "r2"], ["y"])]
    f32 = TensorProto.FLOAT
    inits, out = [], helper.make_tensor_value_info("y", f32, [batch, "w"])
    if lstm:     # y [n, w] as a sequence of n steps, batch 1 -> LSTM -> Y squeezed [n, 1, hidden]
        rng, size, hidden = np.random.default_rng(1), width // 2 + pad, 3
        inits = [numpy_helper.from_array(rng.normal(0, 0.5, s).astype(np.float32), n) for n, s in
                 (("W", (1, 4 * hidden, size)), ("R", (1, 4 * hidden, hidden)), ("B", (1, 8 * hidden)))]
        nodes += [const("ax1", [1]), helper.make_node("Unsqueeze", ["y", "ax1"], ["seq"]),
                  helper.make_node("LSTM", ["seq", "W", "R", "B"], ["Y", "Yh", "Yc"], hidden_size=hidden),
                  helper.make_node("Squeeze", ["Y", "ax1"], ["z"])]
        out = helper.make_tensor_value_info("z", f32, [batch, 1, hidden])
    graph = helper.make_graph(nodes, "computed_pads", [helper.make_tensor_value_info("x", f32, [batch, width])],
                              [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _options(shapes):
    from converters.options import ConvertOptions
    from converters.validation.signature import InputOverrides

    o = ConvertOptions()
    o.input_overrides = InputOverrides.parse([shapes], None)
    return o


def _ort(model, x):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _static(model, name):
    import onnx

    for vi in onnx.shape_inference.infer_shapes(model).graph.value_info:
        if vi.name == name:
            return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    return None


@pytest.mark.parametrize("pad,width", [(3, 16), (1, 8), (5, 12)])
def test_computed_pads_become_a_constant_and_the_shapes_after_them_static(pad, width):
    import onnx

    from converters.rewrite.onnx_fold import FoldComputedShapes, computed_shape_inputs

    model = _computed_pads_onnx(pad, width)
    assert computed_shape_inputs(model) == 1 and None in (_static(model, "padded") or [None])
    assert FoldComputedShapes.matches(model) == 0          # no LSTM: onnx2tf takes it as it is
    assert FoldComputedShapes.matches(_computed_pads_onnx(pad, width, lstm=True)) == 1
    new, count, info = FoldComputedShapes.apply(model, _options(f"x:[4,{width}]"))
    onnx.checker.check_model(new)
    assert count == 1 and info["nodes"] >= 6 and computed_shape_inputs(new) == 0
    pads = {t.name: t for t in new.graph.initializer}["pads"]
    assert list(onnx.numpy_helper.to_array(pads)) == [0, pad, 0, pad]
    assert _static(new, "padded") == [4, width + 2 * pad] and _static(new, "l2") == [4, width // 2 + pad]
    x = np.random.default_rng(pad).normal(0, 1, (4, width)).astype(np.float32)
    np.testing.assert_array_equal(_ort(new, x), _ort(model, x))


@pytest.mark.parametrize("steps", [4, 2])
def test_fold_squeeze_then_unroll_gives_the_lstm_static_steps_and_the_same_outputs(steps):
    """The three rewrites onnx2tf needs on silero-vad's sequence model, in prepare()'s order,
    on the tiny model: the LSTM is unrolled only once the pads are constants."""
    import onnx

    from converters.rewrite import candidates

    model = _computed_pads_onnx(lstm=True)
    todo = [r for r in candidates("onnx -> tflite", "onnx")
            if r.name in ("fold_computed_shapes", "lstm_output_squeeze", "unroll_lstm")]
    assert [r.name for r in todo] == ["fold_computed_shapes", "lstm_output_squeeze", "unroll_lstm"]
    new, options, lines = model, _options(f"x:[{steps},16]"), []
    assert todo[1].matches(model, options) == 0      # the LSTM's length is not static yet
    for rw in todo:
        assert rw.matches(new, options) == 1
        new, count, info = rw.apply(new, options)
        assert count == 1
        lines.append(rw.describe(count, info))
    onnx.checker.check_model(new)
    writer = {n.output[0]: n.op_type for n in new.graph.node}
    assert "LSTM" not in writer.values() and writer["z"] == "Reshape"
    assert lines[2] == f"unrolled 1 LSTM into MatMul and gate ops ({steps} steps)"
    x = np.random.default_rng(steps).normal(0, 1, (steps, 16)).astype(np.float32)
    np.testing.assert_allclose(_ort(new, x), _ort(model, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("steps", [None, 65])
def test_the_squeeze_of_an_lstm_that_is_not_unrolled_is_left_alone(steps):
    """Not static (the pads not folded) or over unroll_lstm's 64 steps: onnx2tf keeps the LSTM
    and its Squeeze as they are."""
    from converters.rewrite.onnx_fold import FoldComputedShapes, LSTMOutputSqueeze

    model = _computed_pads_onnx(lstm=True)
    if steps:
        model = FoldComputedShapes.apply(model, _options(f"x:[{steps},16]"))[0]
    assert LSTMOutputSqueeze.matches(model) == 0
    assert LSTMOutputSqueeze.apply(model)[:2] == (model, 0)


def test_a_wrong_fold_is_told_from_the_original():
    """The comparison above can fail: pads folded to another value give other outputs."""
    import onnx
    from onnx import numpy_helper

    from converters.rewrite.onnx_fold import FoldComputedShapes

    model = _computed_pads_onnx()
    new, _, _ = FoldComputedShapes.apply(model, _options("x:[4,16]"))
    wrong = onnx.ModelProto()
    wrong.CopyFrom(new)
    for t in wrong.graph.initializer:
        if t.name == "pads":
            t.CopyFrom(numpy_helper.from_array(np.array([0, 2, 0, 4], np.int64), "pads"))
    x = np.random.default_rng(0).normal(0, 1, (4, 16)).astype(np.float32)
    a, b = _ort(model, x), _ort(wrong, x)
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_constant_shapes_and_shapes_from_inputs_are_not_the_pattern():
    from onnx import TensorProto, helper, numpy_helper

    from converters.rewrite.onnx_fold import FoldComputedShapes, computed_shape_inputs

    f32 = TensorProto.FLOAT
    stored = helper.make_graph(
        [helper.make_node("Pad", ["x", "pads"], ["y"])], "g", [helper.make_tensor_value_info("x", f32, [2, 3])],
        [helper.make_tensor_value_info("y", f32, ["n", "w"])],
        initializer=[numpy_helper.from_array(np.array([0, 1, 0, 1], np.int64), "pads")])
    from_input = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", f32, ["n", 3])], [helper.make_tensor_value_info("y", f32, ["n", 3])])
    for g in (stored, from_input):
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        assert computed_shape_inputs(model) == 0
        assert FoldComputedShapes.apply(model, None)[:2] == (model, 0)
