"""Rewrites before TFLite's quantizer for BirdNET's spectrogram front end: constant folding
with the open batch fixed to 1 (converters/rewrite/tflite_fold.py), RFFT2D as float32 MatMuls
(tflite_rfft.py) and POW by a constant (tflite_pow.py). Tiny models built here (with TFLite's
schema objects, or by TFLite's converter from tf.signal), refused by the quantizer, rewritten,
compared with the original on generated inputs, and quantized; a wrong rewrite of each fails
the comparison."""

import numpy as np
import pytest

from tests.converters.rewrite.test_rewrite_int8_ops import F32, I32, _Graph, inputs, quantize


def run(model_bytes, x):
    """The first output of a float TFLite model on `x` (its input resized to x's shape)."""
    from tensorflow.lite.python.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=bytes(model_bytes),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    d = it.get_input_details()[0]
    it.resize_tensor_input(d["index"], x.shape)
    it.allocate_tensors()
    it.set_tensor(d["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def same(a, b, x, atol=1e-5):
    ya, yb = run(a, x), run(b, x)
    return ya.shape == yb.shape and np.allclose(ya, yb, atol=atol, rtol=1e-4)


def refused_for(model_bytes, samples):
    from edge.errors import EdgeportError

    with pytest.raises(EdgeportError) as e:
        quantize(model_bytes, samples)
    return str(e.value)


def op_names(model_bytes):
    from converters.rewrite.tflite import _codes, _schema

    fu = _schema()
    m = fu.convert_bytearray_to_object(bytearray(model_bytes))
    names = {v: k for k, v in vars(fu.schema_fb.BuiltinOperator).items() if not k.startswith("_")}
    codes = _codes(m)
    return [names[codes[op.opcodeIndex]] for op in m.subgraphs[0].operators]


# -- constant folding ------------------------------------------------------------------------------
def shape_model(divisor=1, open_dim=0):
    """y = x * CAST(FLOOR_DIV(SHAPE(x), divisor)), x of shape [1, 2] open in `open_dim`: the
    arithmetic on an input's shape that TFLite's converter keeps for an open dimension."""
    b = _Graph()
    s = b.s
    x = b.tensor("x", [1, 2])
    b.g.tensors[x].shapeSignature = np.array([-1 if k == open_dim else 2 for k in range(2)], np.int32)
    shape, q, f, y = b.tensor("shape", [2], dtype=I32), b.tensor("q", [2], dtype=I32), \
        b.tensor("f", [2]), b.tensor("y", [1, 2])
    d = b.tensor("divisor", [2], data=np.array([1, divisor], np.int32), dtype=I32)
    opts = s.ShapeOptionsT()
    opts.outType = I32
    b.op("SHAPE", [x], [shape], opts)
    b.op("FLOOR_DIV", [shape, d], [q], s.FloorDivOptionsT())
    cast = s.CastOptionsT()
    cast.inDataType, cast.outDataType = I32, F32
    b.op("CAST", [q], [f], cast)
    b.op("MUL", [x, f], [y], s.MulOptionsT())
    for t in (y,):
        b.g.tensors[t].shapeSignature = np.array([-1, 2], np.int32)
    return b.done([x], [y])


def test_arithmetic_on_a_fixed_shape_is_folded_and_the_quantizer_takes_it():
    from converters.rewrite.tflite_fold import ConstantFold, fold_constants

    original = shape_model()
    samples = inputs((1, 2), 8, 0)
    assert "no int8 kernel for op FLOOR_DIV" in refused_for(original, samples)
    assert ConstantFold.matches(original) == 3          # SHAPE, FLOOR_DIV, CAST
    rewritten, n = fold_constants(original)
    assert n == 3 and op_names(rewritten) == ["MUL"]
    for x in inputs((1, 2), 5, 1, -100, 100):
        assert same(original, rewritten, x)
    int8 = quantize(rewritten, samples)
    assert "MUL" in op_names(int8)


def test_a_shape_open_past_the_batch_is_not_folded():
    """[1, -1]: the shape is known only when the model runs; nothing depending on it folds."""
    from converters.rewrite.tflite_fold import ConstantFold

    assert ConstantFold.matches(shape_model(open_dim=1)) == 0


def test_a_model_the_interpreter_cannot_run_is_left_as_it_is():
    """A custom op the interpreter has no kernel for: nothing folded, the model unchanged."""
    from converters.rewrite.tflite_fold import fold_constants

    model = shape_model()
    fu = _Graph().fu
    m = fu.convert_bytearray_to_object(bytearray(model))
    g = m.subgraphs[0]
    oc = fu.schema_fb.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.customCode, oc.version = 32, 32, b"NoSuchOp", 1
    m.operatorCodes.append(oc)
    op = fu.schema_fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = len(m.operatorCodes) - 1, [int(g.outputs[0])], [len(g.tensors)]
    out = fu.schema_fb.TensorT()
    out.name, out.shape, out.type, out.buffer = b"custom_out", np.array([1, 2], np.int32), F32, 0
    g.tensors.append(out)
    g.operators.append(op)
    g.outputs = np.array([len(g.tensors) - 1], np.int32)
    custom = bytes(fu.convert_object_to_bytearray(m))
    assert fold_constants(custom) == (custom, 0)


def test_a_fold_under_a_wrong_batch_fails_the_comparison(monkeypatch):
    """Folding with the open batch fixed to 2 (not the 1 the samples have) gives other
    constants: the comparison sees it."""
    from converters.rewrite import tflite_fold

    original = shape_model()
    right = tflite_fold._fixed_inputs
    monkeypatch.setattr(tflite_fold, "_fixed_inputs",
                        lambda g: {k: [2] + v[1:] for k, v in right(g).items()})
    rewritten, n = tflite_fold.fold_constants(original)
    assert n == 3
    assert not same(original, rewritten, inputs((1, 2), 1, 2)[0])


def _tflite(fn, spec):
    import tensorflow as tf

    f = tf.function(fn, input_signature=[spec])
    return tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert()


@pytest.mark.parametrize("length,step", [(64, 32), (50, 17), (100, 100)])
def test_tf_signal_frame_on_an_open_batch_is_folded(length, step):
    """tf.signal.frame on a [None, 400] input, as TFLite's converter writes it (SHAPE,
    FLOOR_DIV, RANGE, GATHER...): folded, the same frames, and quantized."""
    import tensorflow as tf

    from converters.rewrite.tflite_fold import fold_constants

    original = _tflite(lambda x: {"y": tf.reduce_mean(tf.signal.frame(x, length, step), -1) * 2.0},
                       tf.TensorSpec([None, 400], tf.float32, name="audio"))
    samples = inputs((1, 400), 8, 3)
    assert "no int8 kernel for op" in refused_for(original, samples)
    rewritten, n = fold_constants(original)
    assert n > 0 and "FLOOR_DIV" not in op_names(rewritten) and "SHAPE" not in op_names(rewritten)
    for x in inputs((1, 400), 3, 4):
        assert same(original, rewritten, x)
    assert len(quantize(rewritten, samples)) > 0


# -- RFFT2D in float32 -------------------------------------------------------------------------------
def _spectrum(x):
    import tensorflow as tf

    s = tf.signal.stft(x, frame_length=32, frame_step=16, fft_length=32)
    return {"re": tf.cast(s, tf.float32) * 2.0}


@pytest.fixture(scope="module")
def spectrum():
    import tensorflow as tf

    return _tflite(_spectrum, tf.TensorSpec([1, 160], tf.float32, name="audio"))


def test_rfft2d_becomes_float32_matmuls_and_the_quantizer_takes_them(spectrum):
    from converters.rewrite.tflite_rfft import FLOAT32, RFFT2DMatMulFloat32, rewrite_rfft2d

    samples = inputs((1, 160), 8, 5)
    assert "no int8 kernel for op RFFT2D" in refused_for(spectrum, samples)
    assert RFFT2DMatMulFloat32.matches(spectrum) == 1
    rewritten, n = rewrite_rfft2d(spectrum, FLOAT32)
    assert n == 1 and "CAST" not in op_names(rewritten) and "BATCH_MATMUL" in op_names(rewritten)
    for x in inputs((1, 160), 4, 6):
        assert same(spectrum, rewritten, x, atol=1e-4)
    assert "BATCH_MATMUL" in op_names(quantize(rewritten, samples))


def test_a_wrong_dft_fails_the_comparison(spectrum, monkeypatch):
    """The cos and sin matrices swapped: the comparison sees it."""
    from converters.rewrite import tflite_rfft

    right = tflite_rfft.dft_matrices
    monkeypatch.setattr(tflite_rfft, "dft_matrices", lambda n, k: right(n, k)[::-1])
    rewritten, _ = tflite_rfft.rewrite_rfft2d(spectrum, tflite_rfft.FLOAT32)
    assert not same(spectrum, rewritten, inputs((1, 160), 1, 7)[0], atol=1e-4)


# -- POW by a constant -----------------------------------------------------------------------------
def pow_model(exponent, base="square"):
    """y = (x * x) ** exponent (BirdNET's magnitude scaling of a power spectrum), or with
    base 'abs' ABS(x) ** exponent."""
    b = _Graph()
    x, sq, y = b.tensor("x", [1, 8]), b.tensor("square", [1, 8]), b.tensor("y", [1, 8])
    c = b.tensor("exponent", [], data=np.array(exponent, np.float32))
    if base == "square":
        b.op("MUL", [x, x], [sq], b.s.MulOptionsT())
    else:
        b.op("ABS", [x], [sq])
    b.op("POW", [sq, c], [y], b.s.PowOptionsT())
    return b.done([x], [y])


@pytest.mark.parametrize("exponent,base,ops", [(0.23, "square", ["ABS", "LOG", "MUL", "EXP"]),
                                                (0.23, "abs", ["ABS", "LOG", "MUL", "EXP"]),
                                                (2.0, "square", ["MUL", "MUL"])])
def test_pow_by_a_constant_is_rewritten_and_the_quantizer_takes_it(exponent, base, ops):
    """A square's power is |x| ** 2c, the square gone (one ABS); another base keeps its op."""
    from converters.rewrite.tflite_pow import PowByConstant, rewrite_pow

    original = pow_model(exponent, base)
    samples = inputs((1, 8), 8, 8)
    assert "no int8 kernel for op POW" in refused_for(original, samples)
    assert PowByConstant.matches(original) == 1
    rewritten, n = rewrite_pow(original)
    assert n == 1 and op_names(rewritten) == ops
    for x in inputs((1, 8), 4, 9, -3, 3) + [np.zeros((1, 8), np.float32)]:
        assert same(original, rewritten, x)
    assert len(quantize(rewritten, samples)) > 0


def test_a_whole_exponent_other_than_2_is_left_alone():
    """(-2) ** 3 is -8, which EXP(3 * LOG(-2)) cannot give."""
    from converters.rewrite.tflite_pow import PowByConstant

    assert PowByConstant.matches(pow_model(3.0)) == 0


def test_a_wrong_exponent_fails_the_comparison(monkeypatch):
    from converters.rewrite import tflite_pow

    original = pow_model(0.23)
    monkeypatch.setattr(tflite_pow, "_exponent", lambda model, g, op: 0.5)
    rewritten, _ = tflite_pow.rewrite_pow(original)
    assert not same(original, rewritten, inputs((1, 8), 1, 10, -3, 3)[0])
