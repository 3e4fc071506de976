"""PyTorch (module factory + state dict, TorchScript, torch.export .pt2) -> ONNX, TFLite, Core ML.

Routes:
  * ONNX: `torch.onnx.export(dynamo=False)` (the TorchScript-based exporter; the dynamo one
    needs onnxscript). Static batch unless --dynamic-batch.
  * TFLite float: litert-torch (torch.export -> StableHLO -> TFLite), no TensorFlow needed.
    A 4-D NCHW image input is turned into NHWC with `litert_torch.to_channel_last_io`, so the
    TFLite model takes images the TFLite way and no TRANSPOSE sits at its input.
  * TFLite full-int8: the float TFLite above, calibrated on real images and quantized by
    TFLite's post-training calibrator/quantizer (`tensorflow.lite.python.optimize.calibrator`,
    the engine behind TFLiteConverter's `representative_dataset` with the classic quantizer):
    int8 weights (per-channel) and activations, uint8 or int8 I/O through one QUANTIZE at each
    end, weights inline in the flatbuffer -- the model layout the Edge TPU compiler takes.
    Before export the PyTorch weights are rounded on TFLite's int8 grid by an AdaRound-style
    search on the calibration images (`adaround`; off with extra={"adaround": False}).
  * Core ML: `torch.jit.trace` -> coremltools (ML program), image input with scale/bias.

TorchScript sources reach litert-torch through `torch._export.converter.TS2EPConverter`.
"""

import os
import tempfile
import time

from edge.errors import EdgeportError, InputError, first_line, require

from converters import formats
from converters.registry import conversion
from converters.quantize.adaround import adaround
from converters.quantize.tflite_int8 import bias_correct, op_histogram, quantize_tflite
from converters.routes.torch_loading import flatten_outputs, import_torch, input_shape, load_source, program_module

DEFAULT_OPSET = 17


def _versions(*extra):
    from converters.artefact import package_versions

    return package_versions("torch", *extra)


def _example(shape, seed=0):
    torch = import_torch()
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1


def _load(source, options):
    """(module, exported_or_None, example_input) for a PyTorch source artefact."""
    model, ep = load_source(source, options)
    _single_tensor_forward(model, source, options)
    shape = input_shape(options, source, ep)
    return model, ep, _example(shape)


def _single_tensor_forward(model, source, options):
    """The PyTorch routes export forward(x) with one example tensor: a TorchScript forward
    with other arguments is refused naming them; a single tensor's --input-shapes is used."""
    try:
        args = list(model.forward.schema.arguments)[1:]
    except Exception:
        return  # not TorchScript: nn.Module / ExportedProgram take their own path
    sig = "(" + ", ".join(f"{a.name}: {a.type}" for a in args) + ")"
    if len(args) != 1 or str(args[0].type) != "Tensor":
        raise InputError(f"{source.name}: forward{sig} takes {len(args)} arguments; the PyTorch "
                         "conversions export a forward that takes one tensor",
                         "wrap the module in one whose forward(x) fixes the other arguments, "
                         "script it, and convert that (validate runs it as it is: --arg NAME=VALUE)")
    ov = getattr(options, "input_overrides", None)
    shapes = dict(ov.shapes) if ov is not None else {}
    shape = shapes.get(args[0].name) or shapes.get(None)
    if shape and not options.input_shape:
        options.input_shape = tuple(shape)


def _count_outputs(model, x):
    torch = import_torch()
    with torch.no_grad():
        y = model(x)
    return len(flatten_outputs(y)), y


def _is_nchw_image(shape):
    return len(shape) == 4 and shape[1] in (1, 3, 4) and shape[-1] not in (1, 3, 4)


# ----------------------------------------------------------------------------------- ONNX

def torch_to_onnx(source, output_path, options):
    torch = import_torch()
    model, ep, x = _load(source, options)
    opset = int(options.opset or DEFAULT_OPSET)
    n_out, _ = _count_outputs(model, x)
    input_names = ["input"]
    output_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    dynamic_axes = None
    if options.dynamic_batch:
        dynamic_axes = {n: {0: "batch"} for n in input_names + output_names}
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), os.fspath(output_path), opset_version=opset,
                              input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, dynamo=False, do_constant_folding=True)
    except Exception as e:
        raise EdgeportError(f"torch.onnx.export failed for {source.name} at opset {opset}: "
                            f"{type(e).__name__}: {first_line(e)}",
                            "try another --opset, or export the model to ONNX yourself") from None
    return {"opset": opset, "input_shape": list(x.shape), "dynamic_batch": bool(options.dynamic_batch),
            "exporter": "torch.onnx.export (TorchScript-based, dynamo=False)",
            "versions": _versions("onnx")}


# --------------------------------------------------------------------------------- TFLite

def _litert():
    return require("litert_torch", "torch", "PyTorch -> TFLite", package="litert-torch")


def _exportable(model, source, x):
    """An nn.Module torch.export can trace (TorchScript goes through TS2EPConverter)."""
    torch = import_torch()
    if isinstance(model, torch.jit.ScriptModule):
        try:
            from torch._export.converter import TS2EPConverter

            ep = TS2EPConverter(model, (x,)).convert()
            return program_module(ep)
        except Exception as e:
            raise EdgeportError(f"cannot turn TorchScript {source.name} into a torch.export program "
                                f"for litert-torch: {type(e).__name__}: {first_line(e)}",
                                "convert from the Python module (--torch-model) or a .pt2 instead"
                                ) from None
    return model


def _write_float_tflite(source, options, path, prepare=None):
    """litert-torch float conversion to `path`; returns facts about its input and output.

    `prepare(model, x)`, when given, may change the loaded model (in place) before export.
    """
    import contextlib
    import io
    import logging

    litert_torch = _litert()
    model, ep, x = _load(source, options)
    if prepare is not None:
        prepare(model, x)
    if options.dynamic_batch:
        options.progress("TFLite: --dynamic-batch is ignored, the batch stays static (Edge TPU needs it)")
    module = _exportable(model, source, x)
    shape = tuple(x.shape)
    channel_last = _is_nchw_image(shape)
    n_out, y = _count_outputs(module, x)
    out_4d = [i for i, t in enumerate(flatten_outputs(y)) if getattr(t, "ndim", 0) == 4]
    if channel_last:
        module = litert_torch.to_channel_last_io(module, args=[0], outputs=out_4d or None).eval()
        sample = (x.permute(0, 2, 3, 1).contiguous(),)
    else:
        sample = (x,)
    logging.getLogger("litert_torch").setLevel(logging.ERROR)
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            edge_model = litert_torch.convert(module, sample)
            edge_model.export(os.fspath(path))
    except Exception as e:
        raise EdgeportError(f"litert-torch could not convert {source.name}: "
                            f"{type(e).__name__}: {first_line(e)}",
                            "the model may use an op torch.export or litert-torch does not support") from None
    return {"input_shape": list(sample[0].shape), "input_layout": "NHWC" if channel_last else None,
            "output_layout_changed": out_4d if channel_last else [], "channel_last": channel_last}


def _tflite_preprocessing(source, options, facts):
    spec = dict(source.preprocessing or {})
    spec.update(options.preprocessing or {})
    if facts["channel_last"]:
        spec["layout"] = "NHWC"
    return spec or None


def torch_to_tflite(source, output_path, options):
    t0 = time.monotonic()
    facts = _write_float_tflite(source, options, output_path)
    meta = {"route": "litert-torch (torch.export -> TFLite), float32",
            "input_shape": facts["input_shape"], "versions": _versions("litert-torch"),
            "seconds_float": round(time.monotonic() - t0, 3)}
    if options.dynamic_batch:
        meta["dynamic_batch"] = "ignored: TFLite batch is static"
    if facts["input_layout"]:
        meta["input_layout"] = "NHWC (the PyTorch NCHW input, channel-last for TFLite)"
        meta["preprocessing"] = _tflite_preprocessing(source, options, facts)
    return meta


def torch_to_tflite_int8(source, output_path, options):
    from converters.quantize.calibration import load_calibration

    if (options.io_dtype or "uint8") not in ("uint8", "int8"):
        raise InputError(f"--io-dtype {options.io_dtype}: use uint8 or int8")
    extra = options.extra or {}
    t0 = time.monotonic()
    state = {}

    def prepare(model, x):
        """Load the calibration images; AdaRound the PyTorch weights on them (before export)."""
        torch = import_torch()
        shape = list(x.shape)
        channel_last = _is_nchw_image(shape)
        if len(shape) != 4:
            raise InputError(f"full-int8 calibration feeds images, but the model input has shape {shape}",
                             "PyTorch -> tflite-int8 takes models with one image input")
        nhwc = [shape[0], shape[2], shape[3], shape[1]] if channel_last else shape
        spec = _tflite_preprocessing(source, options, {"channel_last": channel_last}) or {}
        layout = "NHWC" if channel_last else (spec.get("layout") or "NHWC")
        spec["layout"] = layout
        cal = state["cal"] = load_calibration(options.calibration, spec, count=options.calibration_count,
                                              input_shape=nhwc, layout=layout, progress=options.progress)
        if not extra.get("adaround", True):
            return
        if isinstance(model, torch.jit.ScriptModule):
            state["adaround"] = "skipped: TorchScript modules take no forward hooks"
            return
        arrays = [torch.from_numpy(a) for a in cal.arrays()]
        if channel_last:
            arrays = [a.permute(0, 3, 1, 2).contiguous() for a in arrays]
        t = time.monotonic()
        options.progress(f"AdaRound: rounding the weights on {len(arrays)} calibration images")
        state["adaround"] = adaround(model, arrays, sweeps=int(extra.get("adaround_sweeps", 4)),
                                     damp=float(extra.get("adaround_damp", 0.01)),
                                     progress=options.progress)
        state["adaround"]["seconds"] = round(time.monotonic() - t, 1)

    with tempfile.TemporaryDirectory(prefix="edgeport-torch-") as tmp:
        float_path = os.path.join(tmp, "float.tflite")
        facts = _write_float_tflite(source, options, float_path, prepare=prepare)
        shape = facts["input_shape"]
        cal = state["cal"]
        with open(float_path, "rb") as f:
            float_bytes = f.read()
        seconds_float = time.monotonic() - t0
        corrected = 0
        if extra.get("bias_correction", True):
            float_bytes, corrected = bias_correct(float_bytes, cal)
        quantized = quantize_tflite(float_bytes, cal, options.io_dtype or "uint8", options.progress)
    with open(output_path, "wb") as f:
        f.write(quantized)
    kind = formats.detect_format(output_path)
    ops = op_histogram(output_path)
    if kind != formats.TFLITE_INT8:
        raise EdgeportError("the quantized model still computes in float (some op has no int8 "
                            f"kernel); ops: {ops}", "the Edge TPU needs every op in int8")
    spec_out = {k: cal.spec[k] for k in ("size", "layout", "mean", "std") if k in cal.spec}
    return {"route": "litert-torch float TFLite -> TFLite post-training calibrator + quantizer "
                     "(tensorflow.lite.python.optimize.calibrator, per-channel int8 weights)",
            "io_dtype": options.io_dtype or "uint8", "input_shape": shape,
            "preprocessing": spec_out, "calibration": cal.summary(), "ops": ops,
            "bias_correction": {"ops": corrected, "images": len(cal)} if corrected else None,
            "adaround": state.get("adaround"),
            "seconds_float": round(seconds_float, 3),
            "versions": _versions("litert-torch", "tensorflow-cpu", "tensorflow")}


# -------------------------------------------------------------------------------- Core ML

class _ChannelScale:
    """Builds an nn.Module multiplying channel c by factors[c] before `inner` (per-channel std)."""

    @staticmethod
    def wrap(inner, factors):
        torch = import_torch()

        class Scaled(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner
                self.register_buffer("k", torch.tensor(factors, dtype=torch.float32).view(1, -1, 1, 1))

            def forward(self, x):
                return self.inner(x * self.k)

        return Scaled().eval()


def _coreml_program(torch, module, x):
    """What coremltools converts: TorchScript as is, else a torch.export program (ATen ops).

    torch.export is preferred to torch.jit.trace: a trace keeps Python-int shape arithmetic
    (`x.view(x.size(0), -1)`) that coremltools 9 fails to convert.
    """
    if isinstance(module, torch.jit.ScriptModule):
        return module
    try:
        return torch.export.export(module, (x,)).run_decompositions({})
    except Exception:
        with torch.no_grad():
            return torch.jit.trace(module, x)


def torch_to_coreml(source, output_path, options):
    import contextlib
    import io

    from converters.routes.coremltools import (_classifier, _ct, _finish, compute_precision, deployment_target,
                                              image_input)

    torch = import_torch()
    ct = _ct()
    model, ep, x = _load(source, options)
    shape = tuple(x.shape)
    spec = dict(source.preprocessing or {})
    spec.update(options.preprocessing or {})
    layout = spec.get("layout") or ("NCHW" if _is_nchw_image(shape) else "NHWC")
    module = model
    image = None
    image_spec = spec
    if len(shape) == 4 and layout == "NCHW" and spec.get("std") and spec.get("mean"):
        std = [float(s) for s in spec["std"]]
        if len(std) == shape[1] and len(set(std)) > 1:
            # Core ML's image scale is one number: scale by std[0], then fix each channel.
            module = _ChannelScale.wrap(model, [std[0] / s for s in std])
            image_spec = dict(spec, std=[std[0]])
        image = image_input(ct, "image", shape, image_spec, layout)
    n_out, y = _count_outputs(model, x)
    classes = int(flatten_outputs(y)[0].shape[-1]) if n_out == 1 else None
    classifier, labels = _classifier(ct, options, classes)
    inputs = [image] if image else [ct.TensorType(name="input", shape=shape)]
    try:
        program = _coreml_program(torch, module, x)
        with contextlib.redirect_stderr(io.StringIO()):  # coremltools' progress bars
            mlmodel = ct.convert(program, source="pytorch", convert_to="mlprogram", inputs=inputs,
                                 classifier_config=classifier, compute_precision=compute_precision(ct, options),
                                 minimum_deployment_target=deployment_target(ct, options.coreml_target))
    except InputError:
        raise
    except Exception as e:
        raise EdgeportError(f"coremltools could not convert {source.name}: {type(e).__name__}: "
                            f"{first_line(e)}") from None
    meta = _finish(ct, mlmodel, output_path, options, spec or None, labels, image)
    meta["versions"] = {**meta.get("versions", {}), **_versions()}
    meta["route"] = "torch.export (or TorchScript) -> coremltools (mlprogram)"
    meta["input_shape"] = list(shape)
    return meta


# ------------------------------------------------------------------------- registrations

conversion(formats.TORCH_FORMATS, formats.ONNX, extra="torch")(torch_to_onnx)
conversion(formats.TORCH_FORMATS, formats.TFLITE, extra="torch")(torch_to_tflite)
conversion(formats.TORCH_FORMATS, formats.TFLITE_INT8, extra="torch", needs=("calibration",))(torch_to_tflite_int8)
conversion(formats.TORCH_FORMATS, formats.COREML, extra="torch")(torch_to_coreml)
