"""A failed full-integer quantization names its real cause: "an op without an int8 kernel"
only when TFLite's quantizer says it has none, never for a RESHAPE that does not fit the
samples or a bias that does not fit its layer."""

import numpy as np
import pytest

from converters.quantize.tflite_int8 import quantizer_failure

# TFLite's own message forms (from its kernels and quantizer), as the calibrator raises them
CASES = [
    ("tensorflow/lite/kernels/reshape.cc:94 num_input_elements != num_output_elements (20 != 16)"
     "Node number 2 (RESHAPE) failed to prepare.", "RESHAPE", "shape"),
    ("tensorflow/lite/kernels/fully_connected.cc:360 Fully Connected: Mismatch between number of bias "
     "elements 10 and number of output channels 12 at node 4Node number 4 (FULLY_CONNECTED) failed to "
     "prepare.", "bias", "bias and weight"),
    ("Channel mismatch between bias and weight tensors 8 vs 16", "bias", "bias and weight"),
    ("Expected bias tensor to be a vector.", "bias", "bias and weight"),   # a transposed conv (ppocr)
    ("tensorflow/lite/kernels/concatenation.cc:158 t->dims->data[d] != t0->dims->data[d] (3 != 4)"
     "Node number 7 (CONCATENATION) failed to prepare.", "CONCATENATION", "shapes"),
    ("Quantization not yet supported for op: 'RFFT2D'.", "RFFT2D", "int8 kernel"),
    ("Input tensor 3 lacks data. Failed to calibrate: dynamic tensors", "dynamic", "control flow"),
    ("something else entirely", "something else", None),
]


@pytest.mark.parametrize("text,named,hinted", CASES)
def test_each_failure_names_its_cause(text, named, hinted):
    what, hint = quantizer_failure(RuntimeError(text))
    assert named in what
    if hinted:
        assert hint and hinted in hint
    blames_kernels = "int8 kernel" in what + (hint or "")
    assert blames_kernels == ("not yet supported" in text), (what, hint)
    assert "tensorflow/lite/kernels" not in what  # source paths are noise


def test_reshape_that_does_not_fit_the_samples_is_named(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from converters.quantize.calibration import ArrayCalibration
    from converters.quantize.tflite_int8 import quantize_tflite
    from edge.errors import EdgeportError

    @tf.function(input_signature=[tf.TensorSpec([1, None], tf.float32, name="x")])
    def f(x):
        return tf.reduce_mean(tf.reshape(x, [1, 4, 4]) * 2.0 + 1.0, axis=2)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    cal = ArrayCalibration(str(tmp_path / "d.npz"), "0", [("x", [1, None], "float32")],
                           [[np.ones((1, 20), np.float32)]] * 3)
    with pytest.raises(EdgeportError) as e:
        quantize_tflite(conv.convert(), cal, "uint8", lambda m: None)
    assert "RESHAPE" in str(e.value) and "int8 kernel" not in str(e.value)
