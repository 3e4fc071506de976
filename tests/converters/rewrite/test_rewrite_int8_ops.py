"""Rewrites for ops TFLite's full-integer quantizer has no int8 kernel for
(converters/rewrite/tflite_int8_ops.py): tiny models built here with TFLite's schema objects,
rewritten, compared with the original on generated inputs, and quantized."""

import numpy as np
import pytest

F32, I32, BOOL = 0, 2, 6


class _Graph:
    """A tiny TFLite model under construction: tensors, constants, ops, subgraphs."""

    def __init__(self):
        from tensorflow.lite.tools import flatbuffer_utils as fu

        self.fu, self.s = fu, fu.schema_fb
        self.model = self.s.ModelT()
        self.model.version, self.model.buffers, self.model.operatorCodes = 3, [self.s.BufferT()], []
        self.model.subgraphs = []
        self.g = self.subgraph()

    def subgraph(self):
        g = self.s.SubGraphT()
        g.tensors, g.operators = [], []
        self.model.subgraphs.append(g)
        self.g = g
        return g

    def tensor(self, name, shape, data=None, dtype=F32):
        t = self.s.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), np.array(shape, np.int32), dtype, 0
        if data is not None:
            buf = self.s.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.model.buffers.append(buf)
            t.buffer = len(self.model.buffers) - 1
        self.g.tensors.append(t)
        return len(self.g.tensors) - 1

    def op(self, name, inputs, outputs, options=None):
        builtin = getattr(self.s.BuiltinOperator, name)
        codes = [oc.builtinCode for oc in self.model.operatorCodes]
        if builtin not in codes:
            oc = self.s.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = builtin, min(builtin, 127), 1
            self.model.operatorCodes.append(oc)
            codes.append(builtin)
        o = self.s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = codes.index(builtin), list(inputs), list(outputs)
        if options is not None:
            o.builtinOptions = options
            o.builtinOptionsType = getattr(self.s.BuiltinOptions, type(options).__name__[:-1])
        self.g.operators.append(o)
        return o

    def done(self, inputs, outputs):
        g = self.model.subgraphs[0]
        g.inputs, g.outputs = np.array(inputs, np.int32), np.array(outputs, np.int32)
        return bytes(self.fu.convert_object_to_bytearray(self.model))


def run(model_bytes, x):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=bytes(model_bytes))
    it.allocate_tensors()
    d = it.get_input_details()[0]
    if d["dtype"] == np.int8:
        scale, zero = d["quantization"]
        x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    it.set_tensor(d["index"], x)
    it.invoke()
    o = it.get_output_details()[0]
    y = it.get_tensor(o["index"])
    if o["dtype"] == np.int8:
        scale, zero = o["quantization"]
        y = (y.astype(np.float32) - zero) * scale
    return y


class _Samples(list):
    unit = "samples"

    def representative_dataset(self):
        yield from ([x] for x in self)


def quantize(model_bytes, samples):
    from converters.quantize.tflite_int8 import quantize_tflite

    return quantize_tflite(model_bytes, _Samples(samples), "int8", lambda *a: None)


def inputs(shape, n, seed, low=-1.0, high=1.0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(low, high, shape).astype(np.float32) for _ in range(n)]


# -- DIV ---------------------------------------------------------------------------------------
def div_model(divisor):
    """x [1, 8] -> x / divisor, `divisor` 'constant' (values 0.5 .. 4, also negative), or
    'computed' (BirdNET's normalisation: (x - min(x)) / (max(x - min(x)) + 1e-6)) -> output."""
    m = _Graph()
    s = m.s
    x = m.tensor("x", [1, 8])
    y = m.tensor("y", [1, 8])
    div_opts = s.DivOptionsT()
    if divisor == "constant":
        c = m.tensor("c", [8], np.array([0.5, -1, 2, 4, -0.25, 3, 1, -2], np.float32))
        m.op("DIV", [x, c], [y], div_opts)
    else:
        axis = m.tensor("axis", [1], np.array([1], np.int32), I32)
        lo, shifted = m.tensor("min", [1, 1]), m.tensor("shifted", [1, 8])
        hi, d = m.tensor("max", [1, 1]), m.tensor("range", [1, 1])
        eps = m.tensor("eps", [], np.array(1e-6, np.float32))
        keep = s.ReducerOptionsT()
        keep.keepDims = True
        m.op("REDUCE_MIN", [x, axis], [lo], keep)
        m.op("SUB", [x, lo], [shifted], s.SubOptionsT())
        m.op("REDUCE_MAX", [shifted, axis], [hi], keep)
        m.op("ADD", [hi, eps], [d], s.AddOptionsT())
        m.op("DIV", [shifted, d], [y], div_opts)
    return m.done([x], [y])


@pytest.mark.parametrize("divisor", ["constant", "computed"])
def test_a_div_becomes_a_mul_by_the_reciprocal_and_the_quantizer_takes_it(divisor):
    from converters.rewrite.tflite_int8_ops import DivAsMul
    from edge.errors import EdgeportError

    original = div_model(divisor)
    samples = inputs((1, 8), 8, 3)
    with pytest.raises(EdgeportError, match="no int8 kernel for op DIV"):
        quantize(original, samples)           # the upstream limit this rewrite exists for
    assert DivAsMul.matches(original) == 1
    rewritten, count = DivAsMul.apply(original)
    assert count == 1 and DivAsMul.matches(rewritten) == 0
    for x in inputs((1, 8), 20, 7, -50, 50):   # also far outside the calibration range
        np.testing.assert_allclose(run(rewritten, x), run(original, x), rtol=2e-6, atol=1e-6)
    int8 = quantize(rewritten, samples)
    for x in samples:
        want = run(original, x)
        assert np.max(np.abs(run(int8, x) - want)) <= 0.05 * np.max(np.abs(want))


def test_a_wrong_reciprocal_fails_the_comparison():
    """The comparison above can fail: the reciprocal of |d| (the sign dropped) is caught."""
    from converters.rewrite import tflite_int8_ops

    original = div_model("constant")
    rewritten, _ = tflite_int8_ops.DivAsMul.apply(original)
    fu = _Graph().fu
    model = fu.convert_bytearray_to_object(bytearray(rewritten))
    g = model.subgraphs[0]
    c = next(t for t in g.tensors if t.name.endswith(b"/reciprocal"))
    value = np.frombuffer(bytes(model.buffers[c.buffer].data), np.float32)
    model.buffers[c.buffer].data = np.frombuffer(np.abs(value).tobytes(), np.uint8)
    wrong = bytes(fu.convert_object_to_bytearray(model))
    x = inputs((1, 8), 1, 5)[0]
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(run(wrong, x), run(original, x), rtol=2e-6, atol=1e-6)


def test_a_float_model_without_div_is_left_alone():
    from converters.rewrite.tflite_int8_ops import DivAsMul

    m = _Graph()
    x, y = m.tensor("x", [1, 8]), m.tensor("y", [1, 8])
    m.op("MUL", [x, x], [y], m.s.MulOptionsT())
    model = m.done([x], [y])
    assert DivAsMul.matches(model) == 0
    assert DivAsMul.apply(model) == (model, 0)
