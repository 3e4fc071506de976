"""Float TFLite -> full-integer TFLite, calibrated on real images or on the user's arrays
(TFLite's calibrator).

The route for a float TFLite model whose original is not at hand (most public TFLite models
are float: MediaPipe's, TF Hub's, onnx2tf's output): it runs the float flatbuffer on the
calibration samples, corrects the conv/FC biases for int8 weight rounding
(`quantize.tflite_int8.bias_correct`) and quantizes with TensorFlow's post-training
calibrator (`quantize.tflite_int8.quantize_tflite`): int8 weights per channel, int8
activations, uint8 or int8 I/O (`--io-dtype`). It is what the PyTorch route does after
litert-torch, so `tflite -> tflite-int8 -> edgetpu` plans for a float TFLite.

Calibration samples come from one of two places:
  - `--calibration DIR`: photos through the preprocessing spec, for a model with one 4-D
    image input (NHWC, or NCHW when the shape or `--layout` says so);
  - `--data FILE.npz`: the user's input arrays, keyed by input name (one sample or a stack
    along axis 0; `quantize.calibration.load_array_calibration` checks names, shapes and
    dtypes), for any float model: audio, sensor data, embeddings, several inputs.
With both, an image model calibrates on the photos and any other on the arrays. Validation
afterwards feeds the same kind of data (the photos, or every sample of the --data file).
"""

import time

from converters import formats
from converters.registry import conversion
from edge.errors import EdgeportError, InputError, first_line

FLOATS = ("FLOAT32", "FLOAT16")


def _versions():
    from converters.artefact import package_versions

    return package_versions("tensorflow-cpu", "tensorflow", "ai-edge-litert")


NEED_DATA = "calibrate it on representative input arrays with --data FILE.npz (keyed by input name)"


def float_inputs(model, name):
    """[(name, shape with None for open dims, numpy dtype)] of `model`'s inputs, all float."""
    out = []
    for t in model.inputs():
        if t.dtype not in FLOATS:
            raise InputError(f"{name}'s input '{t.name}' is {t.dtype}, not float: the model is already "
                             "(partly) quantized", "quantize its float original instead")
        sig = list(t.shape_signature) if t.shape_signature is not None and len(t.shape_signature) \
            else list(t.shape)
        out.append((t.name, [None if int(d) < 0 else int(d) for d in sig], t.dtype.lower()))
    return out


def image_input(model, name, spec):
    """(shape, layout) of `model`'s one float image input, or InputError saying why not
    (naming --data FILE.npz, the calibration for every other model)."""
    from converters.quantize.calibration import resolve_spec

    inputs = model.inputs()
    float_inputs(model, name)
    if len(inputs) != 1:
        raise InputError(f"{name} has {len(inputs)} inputs; calibration on images needs one image input",
                         NEED_DATA)
    t = inputs[0]
    shape = [int(d) for d in t.shape]
    if len(shape) != 4 or not any(c in (1, 3) for c in (shape[1], shape[3])):
        raise InputError(f"{name}'s input '{t.name}' has shape {shape}, not an image (1, H, W, 1|3)",
                         NEED_DATA)
    if shape[0] != 1:
        raise InputError(f"{name}'s input has batch {shape[0]}; calibration feeds one image at a time",
                         "export the model with batch 1")
    resolved = resolve_spec(spec, shape, spec.get("layout"))
    return shape, resolved["layout"]


def _is_image_model(model, name, spec):
    try:
        image_input(model, name, spec)
        return True
    except InputError:
        return False


def load_samples(model, source, options):
    """(calibration set, input shape for the sidecar, preprocessing spec or None): photos for
    an image model given --calibration, else the --data arrays."""
    from converters.quantize.calibration import load_array_calibration, load_calibration

    spec = dict(source.preprocessing or {})
    spec.update(options.preprocessing or {})
    data = options.calibration_data
    if options.calibration and (not data or _is_image_model(model, source.name, spec)):
        shape, layout = image_input(model, source.name, spec)
        spec["layout"] = layout
        cal = load_calibration(options.calibration, spec, count=options.calibration_count,
                               input_shape=shape, layout=layout, progress=options.progress)
        if list(cal.tensors[0].shape) != shape:
            raise InputError(f"calibration tensors have shape {list(cal.tensors[0].shape)}, the model's "
                             f"input is {shape}", "check --size and --layout")
        return cal, shape, {k: cal.spec[k] for k in ("size", "layout", "mean", "std") if k in cal.spec}
    from converters.names import name_map

    public = name_map(source.metadata)   # --data is keyed by the source model's input names
    inputs = [(public.get(n, n), s, d) for n, s, d in float_inputs(model, source.name)]
    cal = load_array_calibration(data, inputs, count=options.calibration_count,
                                 progress=options.progress)
    shapes = [list(x.shape) for x in cal.samples[0]]
    return cal, shapes[0] if len(shapes) == 1 else shapes, None


def _run_float(step, float_bytes, cal, source, what):
    """`step(float_bytes, cal)`, which runs the float model: its failure is one EdgeportError."""
    try:
        return step(float_bytes, cal)
    except EdgeportError:
        raise
    except Exception as e:
        raise EdgeportError(f"cannot run {source.name} {what}: {type(e).__name__}: "
                            f"{first_line(e)}") from None


def _check_calibration_data(cal, model):
    """Refuse calibration data that is constant for every input (all zeros, say): it names the
    data, in one line, before quantizing. Returns a text naming the inputs that are constant
    when only some are (a model input may legitimately be fixed), else None."""
    from converters.quantize.calibration import constant_inputs, describe
    from edge.files import printable

    constant = constant_inputs(cal)
    if not constant:
        return None
    names = [t.name for t in model.inputs()]
    shown = ", ".join(f"'{printable(names[i]) if i < len(names) else i}' = {v:g}" for i, v in constant)
    n_inputs = len(next(iter(cal.representative_dataset()), []))
    if len(constant) >= n_inputs:
        raise InputError(f"the calibration data {describe(cal)} is constant: every value of input "
                         f"{shown} in all {len(cal)} {cal.unit}; the quantizer would derive zero "
                         "ranges from it and make a degenerate int8 model",
                         "calibrate on representative data (real images or recorded inputs)")
    return f"input {shown}"


@conversion(formats.TFLITE, formats.TFLITE_INT8, extra="convert",
            needs=(("calibration", "calibration_data"),))   # photos or arrays
def tflite_to_tflite_int8(source, output_path, options):
    from converters.quantize.packed_outputs import normalize_for_int8
    from converters.quantize.tflite_int8 import (
        bias_correct,
        crash_probe,
        fold_float16_weights,
        freeze_open_shapes,
        op_histogram,
        quantize_tflite,
        split_relu_0_to_1,
    )
    from edge.tflite_model import TFLiteModel

    io_dtype = (options.io_dtype or "uint8").lower()
    if io_dtype not in ("uint8", "int8"):
        raise InputError(f"--io-dtype must be uint8 or int8, not {io_dtype}")
    if not options.calibration and not options.calibration_data:
        raise InputError(f"{source.name} needs calibration samples for full-integer quantization",
                         "pass --calibration DIR (representative images) or --data FILE.npz "
                         "(representative input arrays); edgeport never calibrates on random data")
    t0 = time.monotonic()
    with open(source.path, "rb") as f:
        float_bytes = f.read()
    model = TFLiteModel(float_bytes, source.name)
    custom = model.custom_ops()
    if custom:   # TFLite's calibrator runs the model with the built-in ops only
        raise EdgeportError(f"{source.name} uses custom ops ({', '.join(custom)}) that TFLite's calibrator "
                            "cannot run or quantize", "quantize the model's original (Keras, SavedModel, "
                            "PyTorch) instead")
    cal, shape, spec_out = load_samples(model, source, options)
    constant = _check_calibration_data(cal, model)
    times = {"load_" + cal.unit: round(time.monotonic() - t0, 1)}
    t = time.monotonic()
    float_bytes, folded = fold_float16_weights(float_bytes)
    if folded:
        options.progress(f"float16 weights: {folded} DEQUANTIZE ops folded into float32 constants")
    float_bytes, frozen = _run_float(freeze_open_shapes, float_bytes, cal, source,
                                     "on the calibration samples' shapes")
    if frozen:
        options.progress("open input dimensions fixed to the calibration samples' shapes: " + ", ".join(
            f"{n} {old} -> {new}" for n, (old, new) in frozen.items()))
    float_bytes, relu01 = split_relu_0_to_1(float_bytes)
    if relu01:
        options.progress(f"RELU_0_TO_1: {relu01} ops rewritten as RELU + MINIMUM(1) for the quantizer")
    float_bytes, rescale = _run_float(lambda b, c: normalize_for_int8(b, c, options), float_bytes, cal,
                                      source, "to measure its packed outputs")
    corrected = 0
    if options.bias_correction:
        options.progress(f"bias correction: measuring conv/FC inputs on {len(cal)} {cal.unit}")
        float_bytes, corrected = _run_float(bias_correct, float_bytes, cal, source, "for bias correction")
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
    crash = crash_probe(output_path)
    if crash and constant:  # the data, not the runtime, is the likely cause: name it
        from converters.quantize.calibration import describe

        raise EdgeportError(f"the full-int8 model made from {source.name} is not kept: {crash}; the "
                            f"calibration data {describe(cal)} is constant for {constant}",
                            "calibrate on representative data: constant values give the quantizer "
                            "zero ranges")
    if crash:
        raise EdgeportError(f"the full-int8 model made from {source.name} is not kept: {crash}",
                            "a crash in the TFLite runtime's CPU kernels (for openWakeWord's "
                            "melspectrogram, ai-edge-litert's XNNPack delegate), so the model cannot be "
                            "validated here")
    return {"route": "float TFLite -> bias correction -> TFLite post-training calibrator + quantizer "
                     "(tensorflow.lite.python.optimize.calibrator, per-channel int8 weights)",
            "quantization": "full-int8", "io_dtype": io_dtype, "input_shape": shape,
            "preprocessing": spec_out, "calibration": cal.summary(), "ops": ops,
            "bias_correction": {"ops": corrected, cal.unit: len(cal)} if corrected else None,
            "output_rescale": rescale,
            "float16_weights_folded": folded or None, "relu_0_to_1_split": relu01 or None,
            "input_shapes_fixed": {n: {"signature": o, "shape": v} for n, (o, v) in frozen.items()} or None,
            "seconds_steps": times, "versions": _versions()}
