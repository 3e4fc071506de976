"""TF/Keras (and ONNX, through onnx2torch) -> Core ML `.mlpackage` (ML program).

coremltools converts on Linux; Core ML itself runs only on macOS, so off macOS a Core ML
artefact is run by the Core ML reference executor (converters/validation/mil/). An image
input gets Core ML's scale and bias from the preprocessing spec (input = pixel / std -
mean / std); with `--labels` the model becomes a classifier.
"""

import os

from edge.errors import EdgeportError, InputError, require

from converters import formats
from converters.registry import conversion

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


def _finish(ct, mlmodel, output_path, options, spec, labels, image):
    from converters.artefact import package_versions
    from converters.metadata import set_coreml_fields

    set_coreml_fields(mlmodel, options.extra.get("provenance"), options)
    mlmodel.save(os.fspath(output_path))
    meta = {"versions": package_versions("coremltools"), "coreml_target": options.coreml_target or DEFAULT_TARGET,
            "coreml_input": "image" if image else "tensor"}
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
                             minimum_deployment_target=target)
    except Exception as e:
        raise EdgeportError(f"coremltools could not convert {source.name}: {type(e).__name__}: {e}") from None
    return _finish(ct, mlmodel, output_path, options, spec if image else (spec or None), labels, image)


ONNX_ALTERNATIVE = ("coremltools has no ONNX frontend since version 6: convert the original Keras, "
                    "SavedModel or PyTorch model with --to coreml instead")


@conversion(formats.ONNX, formats.COREML, cost=3)
def onnx_to_coreml(source, output_path, options):
    """ONNX -> PyTorch (onnx2torch) -> TorchScript trace -> Core ML."""
    try:
        import onnx2torch
        import torch
    except Exception as e:  # onnx2torch imports torchvision at import time
        raise EdgeportError(f"ONNX -> Core ML needs onnx2torch and torchvision, which do not import here "
                            f"({type(e).__name__}: {e})", ONNX_ALTERNATIVE) from None
    ct = _ct()
    model = formats.load_onnx(source.path)
    graph_inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(graph_inputs) != 1:
        raise InputError(f"{source.name} has {len(graph_inputs)} inputs; ONNX -> Core ML takes one")
    dims = [d.dim_value or 1 for d in graph_inputs[0].type.tensor_type.shape.dim]
    try:
        module = onnx2torch.convert(model).eval()
        example = torch.zeros(dims)
        with torch.no_grad():
            traced = torch.jit.trace(module, example)
            out = module(example)
    except Exception as e:
        raise EdgeportError(f"onnx2torch could not convert {source.name}: {type(e).__name__}: {e}",
                            ONNX_ALTERNATIVE) from None
    spec = dict(source.preprocessing)
    spec.update(options.preprocessing or {})
    layout = spec.get("layout") or ("NCHW" if len(dims) == 4 and dims[1] in (1, 3) else "NHWC")
    image = image_input(ct, graph_inputs[0].name, dims, spec, layout) if len(dims) == 4 else None
    inputs = [image] if image else [ct.TensorType(name=graph_inputs[0].name, shape=tuple(dims))]
    classifier, labels = _classifier(ct, options, int(out.shape[-1]) if hasattr(out, "shape") else None)
    try:
        mlmodel = ct.convert(traced, source="pytorch", convert_to="mlprogram", inputs=inputs,
                             classifier_config=classifier,
                             minimum_deployment_target=deployment_target(ct, options.coreml_target))
    except Exception as e:
        raise EdgeportError(f"coremltools could not convert {source.name}: {type(e).__name__}: {e}",
                            ONNX_ALTERNATIVE) from None
    return _finish(ct, mlmodel, output_path, options, spec or None, labels, image)
