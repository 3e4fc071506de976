"""Float TFLite -> full-integer TFLite, calibrated on real images (TFLite's calibrator).

The route for a float TFLite model whose original is not at hand (most public TFLite models
are float: MediaPipe's, TF Hub's, onnx2tf's output): it runs the float flatbuffer on the
`--calibration` images, corrects the conv/FC biases for int8 weight rounding
(`quantize.tflite_int8.bias_correct`) and quantizes with TensorFlow's post-training
calibrator (`quantize.tflite_int8.quantize_tflite`): int8 weights per channel, int8
activations, uint8 or int8 I/O (`--io-dtype`). It is what the PyTorch route does after
litert-torch, so `tflite -> tflite-int8 -> edgetpu` plans for a float TFLite.

Calibration feeds images only: the model must take one 4-D image input (NHWC, or NCHW when
the shape or `--layout` says so). There is no calibration from arrays yet.
"""

import time

from edge.errors import EdgeportError, InputError, first_line

from converters import formats
from converters.registry import conversion

FLOATS = ("FLOAT32", "FLOAT16")


def _versions():
    from converters.artefact import package_versions

    return package_versions("tensorflow-cpu", "tensorflow", "ai-edge-litert")


def image_input(model, name, spec):
    """(shape, layout) of `model`'s one float image input, or InputError saying why not."""
    from converters.quantize.calibration import resolve_spec

    inputs = model.inputs()
    if len(inputs) != 1:
        raise InputError(f"{name} has {len(inputs)} inputs; calibration on images needs one image input",
                         "edgeport calibrates TFLite models on images only (no array calibration yet)")
    t = inputs[0]
    if t.dtype not in FLOATS:
        raise InputError(f"{name}'s input '{t.name}' is {t.dtype}, not float: the model is already "
                         "(partly) quantized", "quantize its float original instead")
    shape = [int(d) for d in t.shape]
    if len(shape) != 4 or not any(c in (1, 3) for c in (shape[1], shape[3])):
        raise InputError(f"{name}'s input '{t.name}' has shape {shape}, not an image (1, H, W, 1|3)",
                         "edgeport calibrates TFLite models on images only (no array calibration yet)")
    if shape[0] != 1:
        raise InputError(f"{name}'s input has batch {shape[0]}; calibration feeds one image at a time",
                         "export the model with batch 1")
    resolved = resolve_spec(spec, shape, spec.get("layout"))
    return shape, resolved["layout"]


@conversion(formats.TFLITE, formats.TFLITE_INT8, extra="convert", needs=("calibration",))
def tflite_to_tflite_int8(source, output_path, options):
    from edge.tflite_model import TFLiteModel

    from converters.quantize.calibration import load_calibration
    from converters.quantize.tflite_int8 import (bias_correct, fold_float16_weights, op_histogram,
                                                 quantize_tflite, split_relu_0_to_1)

    io_dtype = (options.io_dtype or "uint8").lower()
    if io_dtype not in ("uint8", "int8"):
        raise InputError(f"--io-dtype must be uint8 or int8, not {io_dtype}")
    if not options.calibration:
        load_calibration(None, None)            # the one error message for a missing folder
    extra = options.extra or {}
    t0 = time.monotonic()
    with open(source.path, "rb") as f:
        float_bytes = f.read()
    model = TFLiteModel(float_bytes, source.name)
    custom = model.custom_ops()
    if custom:   # TFLite's calibrator runs the model with the built-in ops only
        raise EdgeportError(f"{source.name} uses custom ops ({', '.join(custom)}) that TFLite's calibrator "
                            "cannot run or quantize", "quantize the model's original (Keras, SavedModel, "
                            "PyTorch) instead")
    spec = dict(source.preprocessing or {})
    spec.update(options.preprocessing or {})
    shape, layout = image_input(model, source.name, spec)
    spec["layout"] = layout
    cal = load_calibration(options.calibration, spec, count=options.calibration_count,
                           input_shape=shape, layout=layout, progress=options.progress)
    if list(cal.tensors[0].shape) != shape:
        raise InputError(f"calibration tensors have shape {list(cal.tensors[0].shape)}, the model's "
                         f"input is {shape}", "check --size and --layout")
    times = {"load_images": round(time.monotonic() - t0, 1)}
    t = time.monotonic()
    float_bytes, folded = fold_float16_weights(float_bytes)
    if folded:
        options.progress(f"float16 weights: {folded} DEQUANTIZE ops folded into float32 constants")
    float_bytes, relu01 = split_relu_0_to_1(float_bytes)
    if relu01:
        options.progress(f"RELU_0_TO_1: {relu01} ops rewritten as RELU + MINIMUM(1) for the quantizer")
    corrected = 0
    if extra.get("bias_correction", True):
        options.progress(f"bias correction: measuring conv/FC inputs on {len(cal)} images")
        try:
            float_bytes, corrected = bias_correct(float_bytes, cal)
        except EdgeportError:
            raise
        except Exception as e:
            raise EdgeportError(f"cannot run {source.name} for bias correction: {type(e).__name__}: "
                                f"{first_line(e)}") from None
    times["bias_correction"] = round(time.monotonic() - t, 1)   # includes importing TensorFlow
    t = time.monotonic()
    quantized = quantize_tflite(float_bytes, cal, io_dtype, options.progress)
    times["calibrate_and_quantize"] = round(time.monotonic() - t, 1)
    with open(output_path, "wb") as f:
        f.write(quantized)
    ops = op_histogram(output_path)
    if formats.detect_format(output_path) != formats.TFLITE_INT8:
        raise EdgeportError(f"{source.name} did not quantize to full integer: some ops stay float "
                            f"(ops: {ops})", "the Edge TPU needs every op in int8")
    spec_out = {k: cal.spec[k] for k in ("size", "layout", "mean", "std") if k in cal.spec}
    return {"route": "float TFLite -> bias correction -> TFLite post-training calibrator + quantizer "
                     "(tensorflow.lite.python.optimize.calibrator, per-channel int8 weights)",
            "quantization": "full-int8", "io_dtype": io_dtype, "input_shape": shape,
            "preprocessing": spec_out, "calibration": cal.summary(), "ops": ops,
            "bias_correction": {"ops": corrected, "images": len(cal)} if corrected else None,
            "float16_weights_folded": folded or None, "relu_0_to_1_split": relu01 or None,
            "seconds_steps": times, "versions": _versions()}
