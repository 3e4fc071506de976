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

import collections
import os
import tempfile
import time

from edge.errors import EdgeportError, InputError, MissingDependency

from . import formats
from .registry import conversion
from .torch_loading import flatten_outputs, import_torch, input_shape, load_source, program_module

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


def _int8_grid(w):
    """Per-output-channel symmetric int8 grid of TFLite's quantizer: (scale, w / scale).

    scale = max|w| / 127 over each output channel (dim 0 of a PyTorch Conv2d/Linear weight,
    which is the TFLite quantized_dimension after export: 0 for CONV_2D/FULLY_CONNECTED, 3 for
    DEPTHWISE_CONV_2D, the same channel), narrow range [-127, 127], zero point 0.
    """
    torch = import_torch()
    w2 = w.detach().reshape(w.shape[0], -1).float()
    scale = w2.abs().amax(1, keepdim=True) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, w2 / scale


def _layer_rows(module, inp, generator, max_rows):
    """Up to `max_rows` input patches of a Conv2d/Linear: (rows, depthwise?) or None.

    Rows are im2col patches (M, K) with K ordered like weight.reshape(O, -1) for a dense conv
    or Linear, or (M, C, kh*kw) for a depthwise conv. None for layouts this does not handle.
    """
    torch = import_torch()
    F = torch.nn.functional
    if isinstance(module, torch.nn.Linear):
        rows = inp.reshape(-1, inp.shape[-1])
        if rows.shape[0] > max_rows:
            rows = rows[torch.randperm(rows.shape[0], generator=generator)[:max_rows]]
        dw = False
    else:
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            return None
        if module.groups not in (1, module.in_channels) or (
                module.groups > 1 and module.out_channels != module.in_channels):
            return None
        pad = getattr(module, "static_padding", None)   # "same"-padding subclasses (TF ports)
        per = max(1, max_rows // inp.shape[0])
        parts = []
        for one in inp.split(1):         # image by image: im2col of a whole batch is too big
            if pad is not None:
                one = pad(one)
            cols = F.unfold(one, module.kernel_size, module.dilation, module.padding, module.stride)[0].T
            if cols.shape[0] > per:
                cols = cols[torch.randperm(cols.shape[0], generator=generator)[:per]]
            parts.append(cols)
        rows = torch.cat(parts)          # (M, C*kh*kw)
        dw = module.groups > 1
    if dw:
        rows = rows.reshape(rows.shape[0], module.in_channels, -1)
    return rows.double(), dw


def _greedy_rounding(hard, fixed, e, H, dw, sweeps):
    """Coordinate descent on sum_c e_c H e_c^T over round-down/round-up choices (0/1 in `hard`).

    `e` is the rounding error (in grid steps) of the starting choice. One weight position at a
    time (for all output channels at once), a weight flips between down and up when that
    lowers its channel's output error; g = e H is updated by a rank-1 step. Stops after
    `sweeps` passes or when a pass flips nothing. Returns the 0/1 choice.
    """
    torch = import_torch()
    hard = hard.clone()
    if dw:   # (C, K, K), K = kh * kw is small: update g directly
        g = torch.einsum("ck,ckj->cj", e, H)
        diag = torch.diagonal(H, dim1=1, dim2=2)
    else:
        g = e @ H
        diag = torch.diagonal(H).expand_as(hard)
    n = hard.shape[1]
    block = n if dw else 64
    for _ in range(sweeps):
        flips = 0
        for b0 in range(0, n, block):   # lazy updates (as in GPTQ): g of the block first,
            cols = slice(b0, min(n, b0 + block))      # the rest of g by one matmul after it
            gb = g[:, cols] if dw else g[:, cols].clone()
            hb = None if dw else H[cols, cols]
            delta = torch.zeros_like(gb) if not dw else None
            for j in range(gb.shape[1]):
                i = b0 + j
                d = 1 - 2 * hard[:, i]                  # +1: down -> up, -1: up -> down
                flip = (2 * d * gb[:, j] + diag[:, i] < -1e-12) & ~fixed[:, i]
                if not bool(flip.any()):
                    continue
                idx = flip.nonzero()[:, 0]
                dd = d[idx]
                hard[idx, i] += dd
                flips += len(idx)
                if dw:
                    g[idx] += dd[:, None] * H[idx, i, :]
                else:
                    gb[idx] += dd[:, None] * hb[j][None, :]
                    delta[idx, j] = dd
            if not dw and bool(delta.any()):
                g += delta @ H[cols, :]
        if not flips:
            break
    return hard


def adaround(model, inputs, sweeps=4, damp=0.01, max_rows=8192, seed=0, progress=None):
    """AdaRound-style rounding of the Conv2d/Linear weights of a PyTorch model, in place.

    For each layer in forward order (sequential: its inputs are computed by the model whose
    earlier layers are already rounded), each weight is rounded down or up on the int8 grid
    TFLite's quantizer will use (_int8_grid), chosen to minimise the layer's output error
    E||(W_q - W) x||^2 on the calibration inputs rather than the weight error (the objective
    of AdaRound, Nagel et al. 2020). That error is a quadratic form e H e^T in the rounding
    error e (grid steps), with H = E[x x^T] over im2col patches (up to `max_rows` positions
    sampled from all images), computed once per layer, normalised to a unit mean diagonal and
    dampened by `damp` * I (a pull towards nearest rounding, against overfitting few images).
    Instead of AdaRound's soft-rounding relaxation optimised with Adam (too slow here: minutes
    for EfficientNet-Lite0 on 2 cores), the down/up choice is made by greedy coordinate
    descent from nearest rounding (_greedy_rounding), which never increases the error.
    Each channel's largest |w| stays at +-127 * scale so the quantizer finds the same scale;
    weights are written back as scale * q, which TFLite's quantizer reproduces exactly
    (BatchNorm folding multiplies a channel by one factor: same integers). Layers whose
    patches do not reproduce their output (unknown padding, grouped convs) get nearest
    rounding. Returns a summary dict.
    """
    torch = import_torch()
    gen = torch.Generator().manual_seed(seed)
    done, skipped, gains = [], [], []

    def pre_hook(layer, args):   # runs when the forward reaches `layer`: round it, then go on
        if layer in done or layer in skipped:
            return
        with torch.no_grad():
            ratio = _round_layer(layer, args[0], gen, max_rows, sweeps, damp)
        (skipped if ratio is None else done).append(layer)
        if ratio is not None:
            gains.append(ratio)
        if progress and (len(done) + len(skipped)) % 10 == 0:
            progress(f"AdaRound: {len(done) + len(skipped)} layers")

    handles = [m.register_forward_pre_hook(pre_hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    batch = torch.cat(inputs, 0)
    try:
        with torch.no_grad():   # one pass: each layer sees the outputs of the rounded layers before it
            model(batch)
    finally:
        for h in handles:
            h.remove()
    return {"layers": len(done) + len(skipped), "adarounded": len(done), "skipped": len(skipped),
            "sweeps": sweeps, "damp": damp, "images": int(batch.shape[0]),
            "mean_output_error_vs_nearest": round(sum(gains) / max(1, len(gains)), 4)}


def _round_layer(layer, x, gen, max_rows, sweeps, damp):
    """Round one layer's weights in place (see adaround); returns error / nearest's, or None
    when the layer got nearest rounding because its patches do not reproduce its output."""
    torch = import_torch()
    w = layer.weight
    scale, ws = _int8_grid(w)
    got = _layer_rows(layer, x, gen, max_rows)
    ok = got is not None
    if ok:   # check the patches reproduce the layer's real output (padding, stride...)
        rows, dw = got
        probe = _layer_rows(layer, x[:1], torch.Generator().manual_seed(1), 10**9)[0]
        wf = w.detach().double().reshape(w.shape[0], -1)
        yp = (probe * wf.reshape(1, *wf.shape)).sum(-1) if dw else probe @ wf.T
        y = layer.forward(x[:1]).double()        # .forward: no hooks
        if isinstance(layer, torch.nn.Linear):
            ref = y.reshape(-1, y.shape[-1])
        else:
            ref = y.reshape(1, y.shape[1], -1).transpose(1, 2).reshape(-1, y.shape[1])
        if layer.bias is not None:
            ref = ref - layer.bias.detach().double()
        ok = yp.shape == ref.shape and torch.allclose(yp, ref, rtol=1e-3,
                                                      atol=1e-4 * float(ref.abs().max()) + 1e-6)
    if not ok:
        w.copy_((scale * ws.round().clamp(-127, 127)).reshape(w.shape).to(w.dtype))
        return None
    if dw:   # per channel (C, k*k, k*k)
        H = torch.einsum("mci,mcj->cij", rows, rows) / rows.shape[0]
        norm = torch.diagonal(H, dim1=1, dim2=2).mean(1).clamp_min(1e-12)
        H = H / norm[:, None, None] + damp * torch.eye(H.shape[1], dtype=H.dtype)
    else:
        H = rows.T @ rows / rows.shape[0]
        H = H / torch.diagonal(H).mean().clamp_min(1e-12) + damp * torch.eye(H.shape[0], dtype=H.dtype)
    wd = ws.double()
    base = wd.floor()
    fixed = torch.zeros_like(base, dtype=torch.bool)     # each channel's max |w| stays at +-127
    fixed.scatter_(1, ws.abs().argmax(1, keepdim=True), True)
    near = wd.round() - base                             # 0/1: nearest rounding

    def out_err(hh):   # sum over channels of e H e^T, e = rounding error in grid steps
        e = base + hh - wd
        if dw:
            return float(torch.einsum("ci,cij,cj->", e, H, e))
        return float(((e @ H) * e).sum())

    hard = _greedy_rounding(near, fixed, base + near - wd, H, dw, sweeps)
    e_ada, e_near = out_err(hard), out_err(near)
    if e_ada > e_near:      # cannot happen (each flip lowers the error); a guard
        hard, e_ada = near, e_near
    q = (base + hard).clamp(-127, 127).float()
    w.copy_((scale.float() * q).reshape(w.shape).to(w.dtype))
    return e_ada / max(e_near, 1e-30)


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
    classes = int(flatten_outputs(y)[0].shape[-1]) if n_out == 1 else None
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
