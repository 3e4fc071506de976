"""A convolution bias held in more than one dimension ([1, 1, 1, C], as onnx2tf writes PP-OCR's
detector's transposed convolutions) reshaped into a vector for TFLite's quantizer
(converters/rewrite/tflite_bias_vector.py): tiny models built here with TFLite's schema objects."""

import numpy as np
import pytest

C = 4


def _model(op_name, bias_shape, seed=0):
    """input [1, 5, 5, 3] -> op_name (TRANSPOSE_CONV 2x2/2 or CONV_2D 3x3) with a bias constant
    of `bias_shape` (C values) -> output."""
    from tensorflow.lite.tools import flatbuffer_utils as fu

    s = fu.schema_fb
    rng = np.random.default_rng(seed)
    model = s.ModelT()
    model.version, model.buffers = 3, [s.BufferT()]
    g = s.SubGraphT()
    g.tensors, g.operators = [], []
    model.subgraphs = [g]

    def tensor(name, shape, data=None, dtype=s.TensorType.FLOAT32):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, np.array(shape, np.int32), dtype, 0
        if data is not None:
            buf = s.BufferT()
            buf.data = np.frombuffer(np.asarray(data).tobytes(), np.uint8)
            model.buffers.append(buf)
            t.buffer = len(model.buffers) - 1
        g.tensors.append(t)
        return len(g.tensors) - 1

    oc = s.OperatorCodeT()
    oc.version = 1
    oc.builtinCode = oc.deprecatedBuiltinCode = getattr(s.BuiltinOperator, op_name)
    model.operatorCodes = [oc]
    x = tensor("input", [1, 5, 5, 3])
    bias = tensor("bias", bias_shape, rng.normal(size=bias_shape).astype(np.float32))
    op = s.OperatorT()
    op.opcodeIndex = 0
    if op_name == "TRANSPOSE_CONV":
        oc.version = 3
        sizes = tensor("sizes", [4], np.array([1, 10, 10, C], np.int32), s.TensorType.INT32)
        w = tensor("w", [C, 2, 2, 3], rng.normal(size=(C, 2, 2, 3)).astype(np.float32))
        y = tensor("output", [1, 10, 10, C])
        op.inputs = np.array([sizes, w, x, bias], np.int32)
        op.builtinOptionsType = s.BuiltinOptions.TransposeConvOptions
        op.builtinOptions = s.TransposeConvOptionsT()
        op.builtinOptions.strideW = op.builtinOptions.strideH = 2
    else:
        w = tensor("w", [C, 3, 3, 3], rng.normal(size=(C, 3, 3, 3)).astype(np.float32))
        y = tensor("output", [1, 5, 5, C])
        op.inputs = np.array([x, w, bias], np.int32)
        op.builtinOptionsType = s.BuiltinOptions.Conv2DOptions
        op.builtinOptions = s.Conv2DOptionsT()
        op.builtinOptions.strideW = op.builtinOptions.strideH = 1
    op.outputs = np.array([y], np.int32)
    g.operators = [op]
    g.inputs, g.outputs = np.array([x], np.int32), np.array([y], np.int32)
    return bytes(fu.convert_object_to_bytearray(model))


def _run(model_bytes, x):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=bytes(model_bytes))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


class _Samples(list):
    unit = "samples"

    def representative_dataset(self):
        yield from ([x] for x in self)


def _quantize(model_bytes):
    from converters.quantize.tflite_int8 import quantize_tflite

    rng = np.random.default_rng(3)
    cal = _Samples(rng.uniform(-1, 1, (1, 5, 5, 3)).astype(np.float32) for _ in range(4))
    return quantize_tflite(model_bytes, cal, "int8", lambda *a: None)


CASES = [("TRANSPOSE_CONV", [1, 1, 1, C]), ("TRANSPOSE_CONV", [1, C]), ("CONV_2D", [1, 1, 1, C])]


@pytest.mark.parametrize("op_name, bias_shape", CASES)
def test_a_bias_in_several_dimensions_becomes_a_vector_the_quantizer_takes(op_name, bias_shape):
    from converters.rewrite.tflite_bias_vector import BiasVector
    from edge.errors import EdgeportError

    original = _model(op_name, bias_shape)
    with pytest.raises(EdgeportError, match="Expected bias tensor to be a vector"):
        _quantize(original)        # the upstream limit this rewrite exists for
    assert BiasVector.matches(original) == 1
    rewritten, count = BiasVector.apply(original)
    assert count == 1 and BiasVector.matches(rewritten) == 0
    x = np.random.default_rng(1).normal(size=(1, 5, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(rewritten, x), _run(original, x), rtol=1e-5, atol=1e-5)
    assert len(_quantize(rewritten)) > 0


def test_a_vector_bias_or_one_that_is_not_per_channel_is_left_alone():
    from converters.rewrite.tflite_bias_vector import BiasVector

    assert BiasVector.matches(_model("TRANSPOSE_CONV", [C])) == 0
    assert BiasVector.apply(_model("CONV_2D", [C]))[1] == 0
