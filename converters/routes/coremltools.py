"""TF/Keras and ONNX (through onnx2coreml) -> Core ML `.mlpackage` (ML program).

coremltools converts on Linux; Core ML itself runs only on macOS, so off macOS a Core ML
artefact is run by the Core ML reference executor (converters/validation/mil/). An image
input gets Core ML's scale and bias from the preprocessing spec (input = pixel / std -
mean / std); with `--labels` the model becomes a classifier.
"""

import os

from converters import formats
from converters.registry import conversion
from edge.errors import EdgeportError, InputError, MissingDependency, require

DEFAULT_TARGET = "iOS15"   # the first target with ML programs


def _ct():
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ct = require("coremltools", "convert", "conversion to Core ML")
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    return ct


def deployment_target(ct, name):
    name = name or DEFAULT_TARGET
    known = [t for t in dir(ct.target) if not t.startswith("_")]
    match = {t.lower(): t for t in known}.get(name.lower())
    if match is None:
        raise InputError(f"unknown --coreml-target {name}", f"choose one of {', '.join(sorted(known))}")
    target = getattr(ct.target, match)
    if target < ct.target.iOS15:
        raise InputError(f"--coreml-target {name} predates ML programs", "use iOS15/macOS12 or newer")
    return target


def label_list(labels_path):
    """Labels as a list indexed by class id (gaps filled with the id)."""
    from edge.labels import read_labels

    labels = read_labels(labels_path)
    if not labels:
        raise InputError(f"labels file {labels_path} is empty")
    return [labels.get(i, str(i)) for i in range(max(labels) + 1)]


def image_input(ct, name, shape, spec, layout):
    """A ct.ImageType for an image input, or None when the spec cannot be expressed by one."""
    if not spec or "mean" not in spec or "std" not in spec:
        return None
    channels = shape[-1] if layout == "NHWC" else shape[1]
    std = [float(s) for s in spec["std"]]
    mean = [float(m) for m in spec["mean"]]
    if len(set(std)) != 1 or channels not in (1, 3):
        return None   # Core ML's scale is one number: per-channel std needs a tensor input
    if len(mean) == 1:
        mean = mean * channels
    scale = 1.0 / std[0]
    bias = [-m * scale for m in mean]
    color = ct.colorlayout.GRAYSCALE if channels == 1 else ct.colorlayout.RGB
    return ct.ImageType(name=name, shape=tuple(shape), scale=scale,
                        bias=bias if channels == 3 else bias[0], color_layout=color,
                        channel_first=(layout == "NCHW"))


def _classifier(ct, options, num_classes=None):
    if not options.labels:
        return None, None
    labels = label_list(options.labels)
    if num_classes is not None and num_classes != len(labels):
        raise InputError(f"the labels file has {len(labels)} labels but the model has {num_classes} outputs",
                         "pass the labels file of this model")
    return ct.ClassifierConfig(labels), labels


def compute_precision(ct, options):
    """The ML program's compute precision: float16 (coremltools' default, what the Neural Engine
    runs) or float32 (--coreml-precision float32: models whose values exceed float16's range,
    such as a power spectrum of raw audio)."""
    return ct.precision.FLOAT32 if options.coreml_precision == "float32" else ct.precision.FLOAT16


def _finish(ct, mlmodel, output_path, options, spec, labels, image):
    from converters.artefact import package_versions
    from converters.metadata import set_coreml_fields

    set_coreml_fields(mlmodel, options.provenance, options)
    mlmodel.save(os.fspath(output_path))
    meta = {"versions": package_versions("coremltools"), "coreml_target": options.coreml_target or DEFAULT_TARGET,
            "coreml_input": "image" if image else "tensor",
            "coreml_precision": options.coreml_precision or "float16"}
    if labels:
        meta["labels"] = labels
    if spec:
        meta["preprocessing"] = spec
    return meta


@conversion((formats.KERAS, formats.SAVEDMODEL), formats.COREML)
def tf_to_coreml(source, output_path, options):
    from converters.quantize.calibration import resolve_spec
    from converters.routes.tf_loading import load_tf_source

    ct = _ct()
    src = load_tf_source(source, options)
    if options.dynamic_batch:
        raise InputError("Core ML models here take a fixed batch", "drop --dynamic-batch for --to coreml")
    target = deployment_target(ct, options.coreml_target)
    shape = list(src.specs[0].shape)
    spec = dict(source.preprocessing)
    spec.update(options.preprocessing or {})
    image = None
    if len(src.specs) == 1 and len(shape) == 4 and spec.get("mean") is not None:
        spec = resolve_spec(spec, tuple(shape), layout="NHWC")
        image = image_input(ct, src.specs[0].name, shape, spec, "NHWC")
    inputs = [image] if image else [ct.TensorType(name=s.name, shape=tuple(s.shape)) for s in src.specs]
    out_shape = src.concrete().structured_outputs
    num = None
    try:
        num = int(out_shape.shape[-1])
    except (AttributeError, TypeError):
        pass
    classifier, labels = _classifier(ct, options, num)
    options.progress(f"coremltools: {source.name} -> ML program ({target.name})")
    try:
        mlmodel = ct.convert([src.concrete()], source="tensorflow", convert_to="mlprogram",
                             inputs=inputs, classifier_config=classifier,
                             compute_precision=compute_precision(ct, options),
                             minimum_deployment_target=target)
    except Exception as e:
        raise EdgeportError(f"coremltools could not convert {source.name}: {type(e).__name__}: {e}") from None
    return _finish(ct, mlmodel, output_path, options, spec if image else (spec or None), labels, image)


ONNX2COREML = "onnx2coreml==1.1.0"


def _onnx2coreml():
    """The onnx2coreml module, or one line saying what to install."""
    import sys

    if sys.version_info < (3, 11):
        raise MissingDependency("onnx2coreml", "convert",
                                f"ONNX -> Core ML (onnx2coreml needs Python 3.11 or newer; this is "
                                f"{sys.version_info.major}.{sys.version_info.minor})")
    try:
        import onnx2coreml
    except ImportError:
        raise MissingDependency("onnx2coreml", "convert", "ONNX -> Core ML") from None
    return onnx2coreml


def constants_as_initializers(model):
    """Move the main graph's Constant nodes into initializers (in place; onnx2coreml has no
    lowering for Constant, exporters emit them freely). Returns how many were moved."""
    from onnx import helper, numpy_helper

    keep, moved = [], 0
    for n in model.graph.node:
        attrs = {a.name: a for a in n.attribute}
        if n.op_type != "Constant" or n.domain not in ("", "ai.onnx") or len(attrs) != 1:
            keep.append(n)
            continue
        (key, a), = attrs.items()
        value = helper.get_attribute_value(a)
        if key == "value":
            t = value
        elif key in ("value_float", "value_floats", "value_int", "value_ints"):
            import numpy as np

            t = numpy_helper.from_array(np.asarray(value, np.float32 if "float" in key else np.int64))
        else:                       # sparse_value, strings: left to the converter
            keep.append(n)
            continue
        t.name = n.output[0]
        model.graph.initializer.append(t)
        moved += 1
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return moved


def _onnx_classes(model):
    outs = list(model.graph.output)
    if len(outs) != 1:
        return None
    dims = outs[0].type.tensor_type.shape.dim
    return int(dims[-1].dim_value) if dims and dims[-1].dim_value > 0 else None


@conversion(formats.ONNX, formats.COREML)
def onnx_to_coreml(source, output_path, options):
    """ONNX -> MIL program (onnx2coreml, built on coremltools' MIL builder) -> ML program.

    onnx2coreml lowers the ONNX graph to a MIL program; coremltools then serializes it with
    the same image input (scale/bias from the preprocessing spec), classifier labels and
    metadata as the other Core ML routes.
    """
    import contextlib
    import io

    from edge.errors import first_line

    o2c = _onnx2coreml()
    ct = _ct()
    from converters.routes.onnx_inputs import fix_shapes, static_shapes

    model = formats.load_onnx(source.path)
    fixed = static_shapes(model, options, source.name)
    fix_shapes(model, fixed)
    constants_as_initializers(model)
    name, shape = fixed[0][0], fixed[0][1]
    target = deployment_target(ct, options.coreml_target)
    spec = dict(source.preprocessing)
    spec.update(options.preprocessing or {})
    image = None
    if len(fixed) == 1 and len(shape) == 4 and spec.get("mean") is not None and spec.get("std") is not None:
        from converters.quantize.calibration import resolve_spec

        layout = spec.get("layout") or ("NCHW" if shape[1] in (1, 3) and shape[-1] not in (1, 3) else "NHWC")
        spec = resolve_spec(spec, tuple(shape), layout=layout)
        image = image_input(ct, name, shape, spec, layout)
    classifier, labels = _classifier(ct, options, _onnx_classes(model))
    options.progress(f"onnx2coreml: {source.name} -> ML program ({target.name})")
    try:
        with contextlib.redirect_stderr(io.StringIO()):   # coremltools' progress bars
            program = o2c.Converter().to_mil(model, target=target)
            mlmodel = ct.convert(program, convert_to="mlprogram", inputs=[image] if image else None,
                                 classifier_config=classifier, compute_precision=compute_precision(ct, options), minimum_deployment_target=target)
    except o2c.UnsupportedOpError as e:
        missing = getattr(e, "missing", None) or {}
        what = ("ops with no Core ML lowering in onnx2coreml: " + "; ".join(
            f"{op} (node {', '.join(nodes[:2])}{', ...' if len(nodes) > 2 else ''})"
            for op, nodes in sorted(missing.items(), key=lambda kv: (kv[0] == "Constant", kv[0])))
        ) + _computed_note(model, missing) if missing else first_line(e)   # Constants left are inside subgraphs
        raise EdgeportError(f"onnx2coreml cannot convert {source.name}: {what}",
                            "convert the model's original (Keras, SavedModel, PyTorch) with --to coreml"
                            ) from None
    except Exception as e:
        raise EdgeportError(f"onnx2coreml could not convert {source.name}: {type(e).__name__}: "
                            f"{first_line(e)}") from None
    meta = _finish(ct, mlmodel, output_path, options, spec or None, labels, image)
    meta["versions"] = {**meta.get("versions", {}), **_package_versions("onnx2coreml", "onnx")}
    meta["route"] = "onnx2coreml (ONNX -> MIL program) -> coremltools (mlprogram)"
    meta["input_shape"] = shape if len(fixed) == 1 else {n: dims for n, dims, _ in fixed}
    return meta


def _computed_note(model, missing):
    """What the refusal adds about the ops left after the rewrites folded what was constant:
    those read values computed from the inputs at run time, which no folding reaches."""
    consts = {t.name for t in model.graph.initializer}

    def reads_computed(op, names):
        nodes = [n for n in model.graph.node if n.op_type == op.split("::")[-1]]
        named = [n for n in nodes if n.name in names] or nodes   # unnamed: "node_3" in its list
        return any(i and i not in consts for n in named for i in n.input)

    computed = sorted(op for op, names in missing.items() if reads_computed(op, set(names)))
    return (f" ({', '.join(computed)} on values computed from the inputs at run time, which no "
            f"constant folding reaches)") if computed else ""


def _package_versions(*names):
    from converters.artefact import package_versions

    return package_versions(*names)
