"""TF SavedModel, Keras 3 and TFLite (float and quantized) -> ONNX, through tf2onnx.

Keras 3 models go through `tf2onnx.convert.from_function` with an explicit input signature
(tf2onnx's `from_keras` guesses it from Keras 2 attributes Keras 3 no longer has). Works as
is with tf2onnx 1.17, NumPy 2.4 and protobuf 7: no patch is applied.
"""

import os

from edge.errors import EdgeportError, first_line, require

from converters import formats
from converters.registry import conversion

DEFAULT_OPSET = 17


def _tf2onnx():
    from converters.routes.tf_loading import import_tf

    import_tf()
    import logging

    tf2onnx = require("tf2onnx", "convert", "conversion to ONNX")
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    return tf2onnx


def _versions():
    from converters.artefact import package_versions

    return package_versions("tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx")


def clean_names(model, output_names=None):
    """Drop tf2onnx's ':0' and 'serving_default_' decorations from graph input/output names."""
    g = model.graph
    renames = {}
    for vi in list(g.input):
        new = vi.name.split(":")[0]
        new = new[len("serving_default_"):] if new.startswith("serving_default_") else new
        renames[vi.name] = new
    for i, vi in enumerate(g.output):
        new = output_names[i] if output_names and i < len(output_names) else vi.name.split(":")[0]
        renames[vi.name] = new
    taken = {n.name for n in g.initializer} | {o for n in g.node for o in n.output}
    renames = {a: b for a, b in renames.items() if a != b and b not in taken and b}
    if len(set(renames.values())) != len(renames):
        return model
    for vi in list(g.input) + list(g.output):
        vi.name = renames.get(vi.name, vi.name)
    for node in g.node:
        for i, n in enumerate(node.input):
            if n in renames:
                node.input[i] = renames[n]
        for i, n in enumerate(node.output):
            if n in renames:
                node.output[i] = renames[n]
    return model


def _save(model, output_path, opset):
    import onnx

    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise EdgeportError(f"tf2onnx produced an invalid ONNX model: {first_line(e)}") from None
    onnx.save(model, os.fspath(output_path))
    return {"opset": opset, "versions": _versions(),
            "inputs": [i.name for i in model.graph.input],
            "outputs": [o.name for o in model.graph.output]}


@conversion((formats.KERAS, formats.SAVEDMODEL), formats.ONNX)
def tf_to_onnx(source, output_path, options):
    from converters.routes.tf_loading import load_tf_source

    tf2onnx = _tf2onnx()
    src = load_tf_source(source, options)
    opset = options.opset or DEFAULT_OPSET
    options.progress(f"tf2onnx: converting {source.name} (opset {opset})")
    try:
        model, _ = tf2onnx.convert.from_function(src.fn, input_signature=src.specs, opset=opset)
    except Exception as e:  # tf2onnx raises plain exceptions for unsupported ops
        raise EdgeportError(f"tf2onnx could not convert {source.name}: {type(e).__name__}: {e}") from None
    return _save(clean_names(model, src.output_names), output_path, opset)


@conversion(formats.TFLITE, formats.ONNX)
@conversion(formats.TFLITE_INT8, formats.ONNX, cost=2)
def tflite_to_onnx(source, output_path, options):
    from edge.tflite_model import TFLiteModel

    tf2onnx = _tf2onnx()
    opset = options.opset or DEFAULT_OPSET
    custom = TFLiteModel.load(source.path).custom_ops()
    if custom:
        raise EdgeportError(f"{source.name} uses custom ops ({', '.join(custom)}) that ONNX cannot express",
                            "convert the model's original (before compilation/custom ops) instead")
    options.progress(f"tf2onnx: converting {source.name} (opset {opset})")
    try:
        model, _ = tf2onnx.convert.from_tflite(os.fspath(source.path), opset=opset)
    except Exception as e:
        raise EdgeportError(f"tf2onnx could not convert {source.name}: {type(e).__name__}: {e}") from None
    return _save(clean_names(model), output_path, opset)
