"""MediaPipe's Convolution2DTransposeBias (converters/rewrite/tflite_transpose_conv_bias.py):
tiny models holding the custom op are built here with TFLite's schema objects, rewritten into
TRANSPOSE_CONV + ADD and validated against the original, whose custom op runs by the numpy
reference of MediaPipe's kernel (converters/mediapipe_ops.py, validation/runners/tflite_reference.py)."""

import json

import numpy as np
import pytest

from converters import mediapipe_ops as mp

OP = mp.CONVOLUTION_2D_TRANSPOSE_BIAS


def _kernel_loops(x, w, b, padding, s_w, s_h):
    """MediaPipe's Prepare + Eval transcribed loop by loop (the scatter form), float32."""
    n, in_h, in_w, c_in = x.shape
    c_out, k_h, k_w, _ = w.shape
    p_h = max(0, k_h - (in_h - 1) % s_h - 1) if padding == mp.PADDING_SAME else 0
    p_w = max(0, k_w - (in_w - 1) % s_w - 1) if padding == mp.PADDING_SAME else 0
    out_h, out_w = s_h * (in_h - 1) + k_h - p_h, s_w * (in_w - 1) + k_w - p_w
    out = np.tile(b.astype(np.float32), (n, out_h, out_w, 1))
    for bi in range(n):
        for iy in range(in_h):
            for ix in range(in_w):
                for fy in range(k_h):
                    for fx in range(k_w):
                        oy, ox = iy * s_h - p_h // 2 + fy, ix * s_w - p_w // 2 + fx
                        if 0 <= oy < out_h and 0 <= ox < out_w:
                            out[bi, oy, ox] += w[:, fy, fx, :] @ x[bi, iy, ix]
    return out


# (input h, w, kernel h, w, stride h, w, padding): MediaPipe's 2x2/2 and odd sizes, paddings
# that drop an odd total, VALID
CASES = [(4, 5, 2, 2, 2, 2, mp.PADDING_SAME), (3, 4, 3, 3, 2, 2, mp.PADDING_SAME),
         (5, 3, 4, 3, 2, 1, mp.PADDING_SAME), (3, 3, 3, 2, 1, 3, mp.PADDING_SAME),
         (4, 2, 3, 3, 2, 2, mp.PADDING_VALID), (2, 3, 1, 1, 3, 2, mp.PADDING_SAME)]


@pytest.mark.parametrize("case", CASES)
def test_numpy_reference_is_mediapipes_kernel(case):
    in_h, in_w, k_h, k_w, s_h, s_w, padding = case
    rng = np.random.default_rng(sum(case))
    x = rng.normal(size=(2, in_h, in_w, 3)).astype(np.float32)
    w = rng.normal(size=(4, k_h, k_w, 3)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    opts = mp.transpose_conv_options(mp.pack_transpose_conv_options(padding, s_w, s_h))
    np.testing.assert_allclose(mp.transpose_conv_bias(x, w, b, opts),
                               _kernel_loops(x, w, b, padding, s_w, s_h), atol=1e-5)


def test_options_the_kernel_refuses_are_refused():
    for raw in (b"", b"\x01\x00\x00\x00\x02\x00\x00\x00",
                mp.pack_transpose_conv_options(3, 2, 2), mp.pack_transpose_conv_options(1, 0, 2)):
        with pytest.raises(ValueError):
            mp.transpose_conv_options(raw)


def _model(case, chained=False, seed=0):
    """input -> ADD 0.5 -> Convolution2DTransposeBias [-> LOGISTIC -> a second one] -> output,
    weights and bias constants, written with TensorFlow's TFLite schema objects."""
    from tensorflow.lite.tools import flatbuffer_utils as fu

    s = fu.schema_fb
    in_h, in_w, k_h, k_w, s_h, s_w, padding = case
    rng = np.random.default_rng(seed)
    model = s.ModelT()
    model.version, model.buffers, model.operatorCodes = 3, [s.BufferT()], []
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

    def code(builtin=None, custom=None):
        oc = s.OperatorCodeT()
        oc.version = 1
        if custom:
            oc.builtinCode = oc.deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
            oc.customCode = custom
        else:
            oc.builtinCode = oc.deprecatedBuiltinCode = builtin
        model.operatorCodes.append(oc)
        return len(model.operatorCodes) - 1

    def op(opcode, ins, outs, custom_options=None):
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = opcode, np.array(ins, np.int32), np.array(outs, np.int32)
        if custom_options is not None:
            o.customOptions = np.frombuffer(custom_options, np.uint8)
        elif model.operatorCodes[opcode].builtinCode == s.BuiltinOperator.ADD:
            o.builtinOptionsType, o.builtinOptions = s.BuiltinOptions.AddOptions, s.AddOptionsT()
        g.operators.append(o)

    add, logistic, custom = code(s.BuiltinOperator.ADD), code(s.BuiltinOperator.LOGISTIC), code(custom=OP)
    opts = mp.pack_transpose_conv_options(padding, s_w, s_h)
    x = tensor("input", [1, in_h, in_w, 3])
    half = tensor("half", [1], np.array([0.5], np.float32))
    y = tensor("shifted", [1, in_h, in_w, 3])
    op(add, [x, half], [y])
    c_in = 3
    for i in range(2 if chained else 1):
        w = tensor(f"kernel{i}", [4, k_h, k_w, c_in], rng.normal(size=(4, k_h, k_w, c_in)).astype(np.float32))
        b = tensor(f"bias{i}", [4], rng.normal(size=4).astype(np.float32) + 1.0)
        h, wd, _, _ = mp.output_hw(mp.transpose_conv_options(opts), in_h, in_w, k_h, k_w)
        out = tensor(f"up{i}", [1, h, wd, 4])
        op(custom, [y, w, b], [out], opts)
        in_h, in_w, c_in = h, wd, 4
        if chained and i == 0:
            y = tensor("squashed", [1, h, wd, 4])
            op(logistic, [out], [y])
    g.inputs, g.outputs = np.array([x], np.int32), np.array([out], np.int32)
    return bytes(fu.convert_object_to_bytearray(model))


def _tflite(model_bytes, x):
    from tensorflow.lite.python.interpreter import Interpreter

    it = Interpreter(model_content=bytes(model_bytes))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def _reference(path, x):
    from converters.artefact import Artefact
    from converters.validation.runners import runner_for

    with runner_for(Artefact(str(path), "tflite", {})) as r:
        assert "numpy reference of MediaPipe's kernel" in r.describe()["note"]
        return next(iter(r.infer({"input": x}).values()))


def _by_hand(case, model_bytes, x, chained):
    """The original's output computed outside any TFLite run, from the model's own constants."""
    from tensorflow.lite.tools import flatbuffer_utils as fu

    m = fu.convert_bytearray_to_object(bytearray(model_bytes))
    g = m.subgraphs[0]

    def const(name):
        t = next(t for t in g.tensors if t.name == name.encode())
        return np.frombuffer(bytes(m.buffers[t.buffer].data), np.float32).reshape(list(t.shape))

    _, _, _, _, s_h, s_w, padding = case
    y = x + 0.5
    for i in range(2 if chained else 1):
        y = _kernel_loops(y, const(f"kernel{i}"), const(f"bias{i}"), padding, s_w, s_h)
        if chained and i == 0:
            y = 1 / (1 + np.exp(-y))
    return y


@pytest.mark.parametrize("chained", [False, True])
@pytest.mark.parametrize("case", [c for c in CASES if c[-1] == mp.PADDING_SAME or c[2] > 1])
def test_rewrite_and_reference_both_agree_with_the_kernel(case, chained, tmp_path):
    from converters.rewrite.tflite_transpose_conv_bias import TransposeConvBias

    original = _model(case, chained)
    path = tmp_path / "original.tflite"
    path.write_bytes(original)
    x = np.random.default_rng(7).normal(size=(1, case[0], case[1], 3)).astype(np.float32)
    want = _by_hand(case, original, x, chained)
    np.testing.assert_allclose(_reference(path, x), want, atol=1e-4)
    assert TransposeConvBias.matches(original) == (2 if chained else 1)
    rewritten, count = TransposeConvBias.apply(original)
    assert count == (2 if chained else 1) and TransposeConvBias.matches(rewritten) == 0
    from edge.tflite_model import TFLiteModel

    rw = tmp_path / "rewritten.tflite"
    rw.write_bytes(rewritten)
    assert TFLiteModel.load(str(rw)).custom_ops() == []
    np.testing.assert_allclose(_tflite(rewritten, x), want, atol=1e-4)


def test_the_builtin_expresses_every_padding_and_stride_the_kernel_accepts():
    """Given the custom op's output shape, TFLite's TRANSPOSE_CONV computes the same padding
    offset for every size, filter, stride and padding (checked here exhaustively on small ones),
    so the rewrite's guard leaves none alone in practice."""
    from converters.rewrite.tflite_transpose_conv_bias import _builtin_offset

    for padding in (mp.PADDING_SAME, mp.PADDING_VALID):
        for stride in range(1, 5):
            opts = mp.transpose_conv_options(mp.pack_transpose_conv_options(padding, stride, stride))
            for size in range(1, 10):
                for k in range(1, 7):
                    out, _, top, _ = mp.output_hw(opts, size, size, k, k)
                    assert _builtin_offset(padding == mp.PADDING_SAME, out, k, stride) == top, \
                        (padding, stride, size, k)


def _broken(kind):
    """The rewrite with one mistake: the class of error validation must catch."""
    import converters.rewrite.tflite_transpose_conv_bias as rw

    real = rw._replace

    def replace(model, g, schema, op, opts, shape):
        if kind == "stride":
            opts = opts._replace(stride_h=opts.stride_h + 1)
        if kind == "padding":
            opts = opts._replace(padding=mp.PADDING_VALID)
        ops = real(model, g, schema, op, opts, shape)
        if kind == "no bias":   # the ADD reads a zero constant instead of the bias
            zero = rw._tensor(model, g, schema, "zero", [1], schema.TensorType.FLOAT32,
                              np.zeros(1, np.float32))
            ops[1].inputs[1] = zero
        return ops

    return replace


@pytest.mark.parametrize("kind", [None, "stride", "padding", "no bias"])
def test_validation_against_the_original_fails_a_wrong_rewrite(kind, tmp_path, capsys, monkeypatch):
    import converters.rewrite.tflite_transpose_conv_bias as rw
    from tests.conftest import run_cli

    case = (6, 6, 3, 3, 2, 2, mp.PADDING_SAME)   # SAME drops 2: VALID is 2 rows off
    original = tmp_path / "up.tflite"
    original.write_bytes(_model(case, chained=True))
    if kind:
        monkeypatch.setattr(rw, "_replace", _broken(kind))
    rewritten = tmp_path / "up_rewritten.tflite"
    rewritten.write_bytes(rw.TransposeConvBias.apply(original.read_bytes())[0])
    # a wrong padding or a dropped bias: MISMATCH; a wrong stride: TFLite refuses the graph
    # (the output shape cannot come from that stride), so it is not validated either
    code, out, err = run_cli(capsys, "validate", original, rewritten, "--json")
    verdict = json.loads(out)
    assert verdict["passed"] is (kind is None) and (code == 0) is (kind is None), (kind, out[-2000:])
    assert "numpy reference of MediaPipe's kernel" in verdict["source"]["note"]


def test_a_model_with_the_custom_op_converts_to_onnx_validated_against_the_original(tmp_path, capsys):
    from tests.conftest import run_cli

    src = tmp_path / "up.tflite"
    src.write_bytes(_model((6, 5, 2, 2, 2, 2, mp.PADDING_SAME), chained=True))
    before = src.read_bytes()
    code, out, err = run_cli(capsys, "convert", src, "--to", "onnx", "-o", tmp_path / "out", "--json")
    assert code == 0, err
    hop = json.loads(out)["models"][0]["artefacts"][0]
    line = "rewrote 2 Convolution2DTransposeBias (MediaPipe custom op) into TRANSPOSE_CONV + ADD"
    assert hop["rewrites"] == [line]
    assert hop["validation"]["passed"] is True
    assert "numpy reference of MediaPipe's kernel" in hop["validation"]["source_run"]
    side = json.loads((tmp_path / "out" / "up.onnx.edgeport.json").read_text())
    assert side["rewrites"] == [line] and side["validation"]["source_run"] == hop["validation"]["source_run"]
    assert src.read_bytes() == before
    code, out, err = run_cli(capsys, "convert", src, "--to", "onnx", "-o", tmp_path / "off", "--no-rewrite")
    assert code != 0 and OP in err
