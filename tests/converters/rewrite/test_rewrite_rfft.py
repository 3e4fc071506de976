"""RFFT2D -> MatMul with constant DFT matrices (converters/rewrite/tflite_rfft.py), for tf2onnx,
which has no conversion for RFFT2D: on tiny spectrogram models built here with
tf.signal.stft / tf.signal.rfft, rewritten, converted and validated against the original, and
the precision of the rewritten FFT against numpy's float64 one on a loud + quiet signal."""

import json

import numpy as np
import pytest


@pytest.mark.parametrize("n_in,length", [(64, 64), (400, 512), (50, 32), (7, 7), (1, 1), (33, 16)])
def test_dft_matrices_are_the_real_fft(n_in, length):
    from converters.rewrite.tflite_rfft import dft_matrices

    x = np.random.default_rng(n_in).uniform(-1, 1, (3, n_in))
    cos, sin = dft_matrices(n_in, length)
    want = np.fft.rfft(x, n=length)          # crops or pads to `length`, as RFFT2D
    assert cos.dtype == sin.dtype == np.float64
    np.testing.assert_allclose(x @ cos, want.real, atol=1e-10)
    np.testing.assert_allclose(x @ sin, want.imag, atol=1e-10)


def _tflite(fn, spec, path):
    import tensorflow as tf

    f = tf.function(fn, input_signature=[spec])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    path.write_bytes(conv.convert())
    return path


def _stft(x):
    import tensorflow as tf

    s = tf.signal.stft(x, frame_length=64, frame_step=32, fft_length=64)
    return {"mag": tf.abs(s), "re": tf.math.real(s) * 2.0, "im": tf.math.imag(s) + 1.0}


def _rfft_padded(x):
    import tensorflow as tf

    return {"power": tf.math.log(tf.abs(tf.signal.rfft(x, fft_length=[128])) + 1e-3)}


def _cast_power(x):
    """BirdNET's spectrogram: the complex STFT cast to float32 (its real part), squared."""
    import tensorflow as tf

    s = tf.signal.stft(x, frame_length=32, frame_step=16, fft_length=32)
    return {"power": tf.math.pow(tf.cast(s, tf.float32), 2.0)}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import tensorflow as tf

    d = tmp_path_factory.mktemp("rfft")
    return {"stft": _tflite(_stft, tf.TensorSpec([1, 400], tf.float32, name="audio"), d / "stft.tflite"),
            "rfft": _tflite(_rfft_padded, tf.TensorSpec([2, 100], tf.float32, name="frames"), d / "rfft.tflite"),
            "cast": _tflite(_cast_power, tf.TensorSpec([1, 160], tf.float32, name="audio"), d / "cast.tflite")}


def _onnx_run(model_bytes, x, tmp_path):
    """The outputs of the rewritten TFLite model converted by tf2onnx, run by ONNX Runtime
    (TFLite itself has no float64 BATCH_MATMUL: the rewrite is for tf2onnx)."""
    import tf2onnx

    from edge.ort import ort_session

    src = tmp_path / "rewritten.tflite"
    src.write_bytes(bytes(model_bytes))
    model, _ = tf2onnx.convert.from_tflite(str(src), opset=13, output_path=str(tmp_path / "rewritten.onnx"))
    s = ort_session(tmp_path / "rewritten.onnx")
    got = s.run(None, {s.get_inputs()[0].name: x})
    return {o.name: v for o, v in zip(s.get_outputs(), got)}, {n.op_type for n in model.graph.node}


def _run(model_bytes, x):
    from tensorflow.lite.python.interpreter import Interpreter

    it = Interpreter(model_content=bytes(model_bytes))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}


@pytest.mark.parametrize("name,shape", [("stft", (1, 400)), ("rfft", (2, 100)), ("cast", (1, 160))])
def test_rfft2d_becomes_matmuls_with_the_same_outputs(models, name, shape, tmp_path):
    from converters.rewrite.tflite import _codes, _schema
    from converters.rewrite.tflite_rfft import RFFT2DMatMul

    original = models[name].read_bytes()
    assert RFFT2DMatMul.matches(original) == 1
    new, count = RFFT2DMatMul.apply(original)
    assert count == 1 and RFFT2DMatMul.matches(new) == 0
    fu = _schema()
    ops = {k for k, v in vars(fu.schema_fb.BuiltinOperator).items()
           if v in _codes(fu.convert_bytearray_to_object(bytearray(new)))}
    assert "BATCH_MATMUL" in ops and not ops & {"RFFT2D", "COMPLEX_ABS", "REAL", "IMAG"}
    if name == "cast":   # only the real part is read: one MatMul, no sin matrix
        m = fu.convert_bytearray_to_object(bytearray(new))
        assert sum(_codes(m)[op.opcodeIndex] == fu.schema_fb.BuiltinOperator.BATCH_MATMUL
                   for op in m.subgraphs[0].operators) == 1
    x = np.random.default_rng(5).uniform(-1, 1, shape).astype(np.float32)
    want, (got, onnx_ops) = _run(original, x), _onnx_run(new, x, tmp_path)
    assert "MatMul" in onnx_ops and set(want) == {k.split(":")[0] for k in got}
    for k, v in got.items():
        np.testing.assert_allclose(v, want[k.split(":")[0]], atol=1e-5 * max(1.0, np.abs(v).max()))
    assert models[name].read_bytes() == original
    assert RFFT2DMatMul.apply(new) == (new, 0)


def _loud_and_quiet(n, frames):
    """Hann-windowed frames of a loud low tone over quiet high tones and faint noise (amplitudes
    1 to 1e-5): a spectrogram's quiet bins beside loud ones, as in real recordings."""
    rng = np.random.default_rng(frames)
    t = np.arange(n)
    out = []
    for _ in range(frames):
        loud = 10.0 ** -rng.uniform(0, 1) * np.sin(2 * np.pi * rng.uniform(2, 20) * t / n + rng.uniform(0, 6))
        quiet = sum(10.0 ** -rng.uniform(3, 5) * np.sin(2 * np.pi * rng.uniform(n / 8, n / 2) * t / n)
                    for _ in range(3))
        out.append((loud + quiet + 1e-5 * rng.standard_normal(n)) * np.hanning(n))
    return np.array(out, np.float32)


def _frames_rfft(x):
    import tensorflow as tf

    s = tf.signal.rfft(x)
    return {"parts": tf.stack([tf.math.real(s), tf.math.imag(s)])}


def _rounding_bound(want):
    """What a correctly rounded float32 result may miss by: TFLite's RFFT2D (an FFT run in
    double precision) stays within it; a float32 product of length N misses it by ~N ulps."""
    return 2 * np.finfo(np.float32).eps * np.abs(want) + 1e-12


@pytest.mark.parametrize("n", [2048, 512])
def test_rewritten_fft_is_as_precise_as_tflites_on_loud_and_quiet_bins(n, tmp_path):
    import tensorflow as tf

    from converters.rewrite.tflite_rfft import RFFT2DMatMul, dft_matrices

    path = _tflite(_frames_rfft, tf.TensorSpec([6, n], tf.float32, name="frames"), tmp_path / "frames.tflite")
    x = _loud_and_quiet(n, 6)
    want = np.fft.rfft(x.astype(np.float64), axis=-1)
    (tflite,) = _run(path.read_bytes(), x).values()
    (got,) = _onnx_run(RFFT2DMatMul.apply(path.read_bytes())[0], x, tmp_path)[0].values()
    for i, part in enumerate(("real", "imaginary")):
        ref = (want.real, want.imag)[i]
        bound = _rounding_bound(ref)
        assert np.all(np.abs(tflite[i] - ref) <= bound), part     # TFLite's FFT: the reference
        err = np.abs(got[i] - ref)
        assert np.all(err <= bound), f"{part}: {np.count_nonzero(err > bound)} bins off, up to {err.max():.3g}"
    # The bound tells a float32 DFT (the rewrite before) from a correctly rounded one.
    cos, _ = dft_matrices(n, n)
    assert np.count_nonzero(np.abs(x @ cos.astype(np.float32) - want.real) > _rounding_bound(want.real)) > 100


def test_spectrogram_tflite_converts_to_onnx_validated_against_the_original(models, tmp_path, capsys):
    from tests.conftest import run_cli

    code, out, err = run_cli(capsys, "convert", models["stft"], "--to", "onnx", "-o", tmp_path, "--json",
                             "--val-range", "[-1,1]")
    assert code == 0, err
    hop = json.loads(out)["models"][0]["artefacts"][0]
    assert hop["validation"]["passed"] is True, hop
    assert hop["rewrites"] == ["rewrote 1 RFFT2D into MatMul with constant DFT matrices"]
    import onnx

    assert "MatMul" in {n.op_type for n in onnx.load(str(tmp_path / "stft.onnx")).graph.node}
    # --no-rewrite: refused before any work, naming the rewrite (not a detour's calibration)
    code, out, err = run_cli(capsys, "convert", models["stft"], "--to", "onnx", "-o", tmp_path / "off",
                             "--no-rewrite")
    assert code == 2 and "needs the rewrite rfft2d_matmul (1 RFFT2D in the model" in err, err
