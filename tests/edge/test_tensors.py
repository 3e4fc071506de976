import numpy as np

from edge.interpreter import make_interpreter
from edge.tensors import dequantize, invoke_float, quantize


def test_quantize_rounds_and_clips():
    assert quantize([-1.0, 0.0, 0.26, 10.0], 0.5, 3, np.int8).tolist() == [1, 3, 4, 23]
    assert quantize([-100.0, 1000.0], 1.0, 0, np.uint8).tolist() == [0, 255]
    q = quantize(np.linspace(-1, 1, 9), 1 / 128, 0, np.int8)
    assert np.allclose(dequantize(q, 1 / 128, 0), np.linspace(-1, 1, 9), atol=1 / 128)


def test_invoke_float_calls_float_and_int8_models_alike(tiny):
    x = np.zeros((1, 16, 16, 3), np.float32)
    x[..., 0] = 0.8  # reddish, normalized as (p - 128) / 128
    outs = {}
    for kind in ("float", "uint8", "int8"):
        interp, _ = make_interpreter(tiny[kind])
        (y,) = invoke_float(interp, x)
        assert y.dtype == np.float32 and y.shape == (1, 4)
        outs[kind] = y
    assert all(o.argmax() == 0 for o in outs.values())
    assert np.allclose(outs["uint8"], outs["float"], atol=0.02)
    assert np.allclose(outs["int8"], outs["float"], atol=0.02)
