"""TF SavedModel / Keras -> TFLite float, and full-integer int8 calibrated on real images.

Full-int8 means int8 weights and activations with integer input and output (`io_dtype`
uint8 by default, as the Edge TPU compiler and pycoral expect, or int8). It needs
`--calibration DIR`: edgeport never calibrates on random data.
"""

from converters import formats
from converters.registry import conversion
from edge.errors import EdgeportError, InputError, first_line


def _versions():
    from converters.artefact import package_versions

    return package_versions("tensorflow-cpu", "tensorflow", "keras")


def _converter(source, options):
    from converters.routes.tf_loading import load_tf_source

    src = load_tf_source(source, options)
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # Frozen first: calibration runs the graph, and resource variables read through a
    # wrapper function are not initialized in the calibrator (READ_VARIABLE fails).
    frozen = convert_variables_to_constants_v2(src.concrete())
    conv = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    return tf, conv, src


def _convert(conv, source):
    try:
        return conv.convert()
    except Exception as e:  # the MLIR converter raises ConverterError with a long log
        first = first_line(e)
        raise EdgeportError(f"the TFLite converter could not convert {source.name}: {first}") from None


def _write(conv, output_path, source):
    data = _convert(conv, source)
    with open(output_path, "wb") as f:
        f.write(data)


@conversion((formats.KERAS, formats.SAVEDMODEL), formats.TFLITE)
def tf_to_tflite_float(source, output_path, options):
    _, conv, src = _converter(source, options)
    options.progress(f"TFLite converter: {source.name} -> float")
    _write(conv, output_path, source)
    return {"versions": _versions(), "quantization": "none"}


@conversion((formats.KERAS, formats.SAVEDMODEL), formats.TFLITE_INT8, needs=("calibration",))
def tf_to_tflite_int8(source, output_path, options):
    from converters.quantize.calibration import load_calibration

    io_dtype = (options.io_dtype or "uint8").lower()
    if io_dtype not in ("uint8", "int8"):
        raise InputError(f"--io-dtype must be uint8 or int8, not {io_dtype}")
    if not options.calibration:  # checked before loading anything heavy
        load_calibration(None, None)
    tf, conv, src = _converter(source, options)
    if len(src.specs) != 1:
        raise InputError(f"{source.name} has {len(src.specs)} inputs; calibration on images needs one")
    spec = dict(source.preprocessing)
    spec.update(options.preprocessing or {})
    cal = load_calibration(options.calibration, spec, count=options.calibration_count,
                           input_shape=src.input_shape, progress=options.progress)
    shape = tuple(int(d) for d in src.specs[0].shape[1:])
    if cal.tensors[0].shape[1:] != shape:
        raise InputError(f"calibration tensors have shape {cal.tensors[0].shape[1:]}, the model's input "
                         f"is {shape}", "check --size and --layout")
    # A packed output (boxes in pixels beside scores) is normalized on the float model first
    # (quantize/packed_outputs.py) and that model quantized by the same calibrator; any other
    # model goes through the converter's own quantization as before.
    from converters.quantize.packed_outputs import normalize_for_int8
    from converters.quantize.tflite_int8 import quantize_tflite

    float_bytes, rescale = normalize_for_int8(_convert(conv, source), cal, options)
    if rescale:
        quantized = quantize_tflite(float_bytes, cal, io_dtype, options.progress)
        with open(output_path, "wb") as f:
            f.write(quantized)
        if formats.detect_format(output_path) != formats.TFLITE_INT8:
            raise EdgeportError(f"{source.name} did not quantize to full integer (some ops stay float)",
                                "the model uses an op without an int8 kernel")
        return {"versions": _versions(), "quantization": "full-int8", "io_dtype": io_dtype,
                "route": "TFLite converter float -> packed outputs normalized -> TFLite post-training "
                         "calibrator + quantizer", "output_rescale": rescale,
                "calibration": cal.summary(), "preprocessing": cal.spec}
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = cal.representative_dataset
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8 if io_dtype == "uint8" else tf.int8
    conv.inference_output_type = conv.inference_input_type
    options.progress(f"TFLite converter: {source.name} -> full int8 ({io_dtype} I/O), "
                     f"calibrating on {len(cal)} images")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _write(conv, output_path, source)
    kind = formats.detect_format(output_path)
    if kind != formats.TFLITE_INT8:
        raise EdgeportError(f"{source.name} did not quantize to full integer (some ops stay float)",
                            "the model uses an op without an int8 kernel")
    return {"versions": _versions(), "quantization": "full-int8", "io_dtype": io_dtype,
            "calibration": cal.summary(), "preprocessing": cal.spec}
