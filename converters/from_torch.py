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
  * Core ML: `torch.jit.trace` -> coremltools (ML program), image input with scale/bias.

TorchScript sources reach litert-torch through `torch._export.converter.TS2EPConverter`.
"""

import collections
import os
import tempfile
import time

from edge.errors import EdgeportError, InputError, MissingDependency

from . import formats
from .registry import conversion
from .torch_loading import import_torch, input_shape, load_source, program_module

DEFAULT_OPSET = 17


def _versions(*extra):
    from .artefact import package_versions

    return package_versions("torch", *extra)


def _first_line(e):
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def _example(shape, seed=0):
    torch = import_torch()
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1


def _load(source, options):
    """(module, exported_or_None, example_input) for a PyTorch source artefact."""
    model, ep = load_source(source, options)
    shape = input_shape(options, source, ep)
    return model, ep, _example(shape)


def _count_outputs(model, x):
    torch = import_torch()
    with torch.no_grad():
        y = model(x)
    return len(_flatten(y)), y


def _flatten(y):
    if isinstance(y, dict):
        return [t for v in y.values() for t in _flatten(v)]
    if isinstance(y, (list, tuple)):
        return [t for v in y for t in _flatten(v)]
    return [y]


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
                            f"{type(e).__name__}: {_first_line(e)}",
                            "try another --opset, or export the model to ONNX yourself") from None
    return {"opset": opset, "input_shape": list(x.shape), "dynamic_batch": bool(options.dynamic_batch),
            "exporter": "torch.onnx.export (TorchScript-based, dynamo=False)",
            "versions": _versions("onnx")}


# --------------------------------------------------------------------------------- TFLite

def _litert():
    try:
        import litert_torch
    except ImportError:
        raise MissingDependency("litert-torch", "torch", "PyTorch -> TFLite") from None
    return litert_torch


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
                                f"for litert-torch: {type(e).__name__}: {_first_line(e)}",
                                "convert from the Python module (--torch-model) or a .pt2 instead"
                                ) from None
    return model


def _write_float_tflite(source, options, path):
    """litert-torch float conversion to `path`; returns facts about its input and output."""
    import contextlib
    import io
    import logging

    litert_torch = _litert()
    model, ep, x = _load(source, options)
    if options.dynamic_batch:
        options.progress("TFLite: --dynamic-batch is ignored, the batch stays static (Edge TPU needs it)")
    module = _exportable(model, source, x)
    shape = tuple(x.shape)
    channel_last = _is_nchw_image(shape)
    n_out, y = _count_outputs(module, x)
    out_4d = [i for i, t in enumerate(_flatten(y)) if getattr(t, "ndim", 0) == 4]
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
                            f"{type(e).__name__}: {_first_line(e)}",
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


def bias_correct(float_bytes, cal):
    """Weight-rounding bias correction of a float TFLite before int8 quantization.

    Rounding weights to int8 (symmetric, per output channel, scale = max|w| / 127, as the
    TFLite quantizer does) shifts each conv/FC output channel by sum(dW * E[x]) on average
    (Nagel et al. 2019, "Data-Free Quantization", bias correction). E[x] is the per-channel
    mean of the op's input over the calibration images; the shift is subtracted from the
    float bias, so the quantized model's expected outputs match the float ones. Ops without
    a bias tensor are left alone. Returns (new float bytes, number of ops corrected).
    """
    import numpy as np

    try:
        from tensorflow.lite.tools import flatbuffer_utils as fu
    except ImportError:
        raise MissingDependency("tensorflow", "convert", "full-integer TFLite quantization") from None

    model = fu.convert_bytearray_to_object(bytearray(float_bytes))
    g = model.subgraphs[0]
    ops = fu.schema_fb.BuiltinOperator
    codes = [max(oc.builtinCode, oc.deprecatedBuiltinCode) for oc in model.operatorCodes]
    kinds = (ops.CONV_2D, ops.DEPTHWISE_CONV_2D, ops.FULLY_CONNECTED)

    def const(ti):
        t = g.tensors[ti]
        data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        if data is None or t.type != fu.schema_fb.TensorType.FLOAT32:
            return None, None
        return np.frombuffer(bytes(data), np.float32).reshape(t.shape), t.buffer

    targets = []
    for op in g.operators:
        code = codes[op.opcodeIndex]
        if code in kinds and len(op.inputs) > 2 and op.inputs[2] >= 0:
            w, _ = const(op.inputs[1])
            b, bbuf = const(op.inputs[2])
            if w is not None and b is not None:
                targets.append((code, op.inputs[0], w, b, bbuf))
    if not targets:
        return float_bytes, 0
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tensorflow.lite.python.interpreter import Interpreter
    interp = Interpreter(model_content=float_bytes, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    input_index = interp.get_input_details()[0]["index"]
    sums, n = {}, 0
    for x in cal.arrays():
        interp.set_tensor(input_index, x)
        interp.invoke()
        n += 1
        for _, xi, _, _, _ in targets:
            v = interp.get_tensor(xi)
            sums[xi] = sums.get(xi, 0) + v.reshape(-1, v.shape[-1]).astype(np.float64).mean(0)
    for code, xi, w, b, bbuf in targets:
        ex = sums[xi] / n
        axis = 3 if code == ops.DEPTHWISE_CONV_2D else 0
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        scale = np.abs(w).max(axis=reduce, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        dw = np.clip(np.round(w / scale), -127, 127) * scale - w
        if code == ops.DEPTHWISE_CONV_2D:      # (1, kh, kw, C)
            shift = dw.sum((0, 1, 2)) * ex
        elif code == ops.CONV_2D:              # (O, kh, kw, I)
            shift = (dw.sum((1, 2)) * ex[None, :]).sum(1)
        else:                                  # FULLY_CONNECTED (O, I)
            shift = (dw * ex[None, :]).sum(1)
        model.buffers[bbuf].data = np.frombuffer((b - shift).astype(np.float32).tobytes(), np.uint8)
    return bytes(fu.convert_object_to_bytearray(model)), len(targets)


def _quantize_tflite(float_bytes, cal, io_dtype, progress):
    """Calibrate a float TFLite on `cal` and fully quantize it (int8, per-channel weights)."""
    try:
        import tensorflow as tf
        from tensorflow.lite.python.optimize import calibrator as tfl_calibrator
    except ImportError:
        raise MissingDependency("tensorflow", "convert", "full-integer TFLite quantization") from None
    io = tf.uint8 if io_dtype == "uint8" else tf.int8
    try:
        calib = tfl_calibrator.Calibrator(tfl_calibrator.add_intermediate_tensors(float_bytes))
        progress(f"quantizing: calibrating on {len(cal)} images")
        return calib.calibrate_and_quantize(cal.representative_dataset, io, io, False,
                                            activations_type=tf.int8, bias_type=tf.int32)
    except Exception as e:
        raise EdgeportError(f"TFLite full-integer quantization failed: {type(e).__name__}: "
                            f"{_first_line(e)}",
                            "an op without an int8 kernel cannot be fully quantized") from None


def op_histogram(path):
    from edge.tflite_model import TFLiteModel

    return dict(sorted(collections.Counter(TFLiteModel.load(path).op_names()).items()))


def torch_to_tflite_int8(source, output_path, options):
    from .calibration import load_calibration

    if (options.io_dtype or "uint8") not in ("uint8", "int8"):
        raise InputError(f"--io-dtype {options.io_dtype}: use uint8 or int8")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgeport-torch-") as tmp:
        float_path = os.path.join(tmp, "float.tflite")
        facts = _write_float_tflite(source, options, float_path)
        shape = facts["input_shape"]
        if len(shape) != 4:
            raise InputError(f"full-int8 calibration feeds images, but the model input has shape {shape}",
                             "PyTorch -> tflite-int8 takes models with one image input")
        spec = _tflite_preprocessing(source, options, facts) or {}
        layout = "NHWC" if facts["channel_last"] else (spec.get("layout") or "NHWC")
        spec["layout"] = layout
        cal = load_calibration(options.calibration, spec, count=options.calibration_count,
                               input_shape=shape, layout=layout, progress=options.progress)
        with open(float_path, "rb") as f:
            float_bytes = f.read()
        seconds_float = time.monotonic() - t0
        corrected = 0
        if (options.extra or {}).get("bias_correction", True):
            float_bytes, corrected = bias_correct(float_bytes, cal)
        quantized = _quantize_tflite(float_bytes, cal, options.io_dtype or "uint8", options.progress)
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

    from .to_coreml import _classifier, _ct, _finish, deployment_target, image_input

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
    classes = int(_flatten(y)[0].shape[-1]) if n_out == 1 else None
    classifier, labels = _classifier(ct, options, classes)
    inputs = [image] if image else [ct.TensorType(name="input", shape=shape)]
    try:
        program = _coreml_program(torch, module, x)
        with contextlib.redirect_stderr(io.StringIO()):  # coremltools' progress bars
            mlmodel = ct.convert(program, source="pytorch", convert_to="mlprogram", inputs=inputs,
                                 classifier_config=classifier,
                                 minimum_deployment_target=deployment_target(ct, options.coreml_target))
    except InputError:
        raise
    except Exception as e:
        raise EdgeportError(f"coremltools could not convert {source.name}: {type(e).__name__}: "
                            f"{_first_line(e)}") from None
    meta = _finish(ct, mlmodel, output_path, options, spec or None, labels, image)
    meta["versions"] = {**meta.get("versions", {}), **_versions()}
    meta["route"] = "torch.export (or TorchScript) -> coremltools (mlprogram)"
    meta["input_shape"] = list(shape)
    return meta


# ------------------------------------------------------------------------- registrations

for _src in formats.TORCH_FORMATS:
    conversion(_src, formats.ONNX, extra="torch")(torch_to_onnx)
    conversion(_src, formats.TFLITE, extra="torch")(torch_to_tflite)
    conversion(_src, formats.TFLITE_INT8, extra="torch", needs=("calibration",))(torch_to_tflite_int8)
    conversion(_src, formats.COREML, extra="torch")(torch_to_coreml)
