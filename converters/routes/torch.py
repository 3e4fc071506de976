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
    search on the calibration images (`adaround`; off with `ConvertOptions(adaround=False)`).
  * Core ML: `torch.jit.trace` -> coremltools (ML program), image input with scale/bias.

TorchScript sources reach litert-torch through `torch._export.converter.TS2EPConverter`.

Forwards with several arguments: a TorchScript forward such as
`forward(x: Tensor, y: Tensor)` or `forward(x: Tensor, sr: int)` is exported with one model
input per tensor argument, named after it and shaped by `--input-shapes NAME:[..]` (or its
`--data` array; TorchScript records no shapes, so a tensor without one stops with exit 2
naming the flag). Every int/float/bool/str argument is fixed to its `--arg NAME=VALUE` (or its
default; neither: exit 2 naming the argument) in a scripted wrapper whose forward takes the
tensors only (`torch_loading.fix_script_arguments`), so scripted control flow on it is kept,
not traced. A `.pt2` with several inputs exports them under their graph names; an open
dimension without `--input-shapes` is filled by the project's placeholder (batch 1, else 32)
and a progress line and the sidecar (`shape_notes`) say so. The sidecar records `inputs`,
`forward` and `fixed_arguments`; validation feeds the source the same tensors and values.
One-tensor forwards keep the input name `input`. tflite-int8 calibrates one image input, so
it refuses several tensors. An exporter's failure is one line: its reason, the TorchScript
line it points at, and the module attributes a forward assigns (state kept between calls).
"""

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass, field

from converters import formats
from converters.quantize.adaround import adaround
from converters.quantize.packed_outputs import normalize_for_int8
from converters.quantize.tflite_int8 import bias_correct, op_histogram, quantize_tflite
from converters.registry import conversion
from converters.routes.torch_loading import (
    exported_inputs,
    fix_script_arguments,
    flatten_outputs,
    forward_input_names,
    import_torch,
    input_shape,
    load_source,
    plan_script_call,
    program_module,
    schema_text,
    script_arguments,
    state_attributes,
)
from edge.errors import EdgeportError, InputError, first_line, require

DEFAULT_OPSET = 17
PLACEHOLDER_OTHER = 32   # converters.validation.signature's placeholder for a non-batch dimension


def _versions(*extra):
    from converters.artefact import package_versions

    return package_versions("torch", *extra)


def _example(shape, seed=0, dtype=None, value_range=None):
    """A seeded example tensor: uniform in --val-range when given, else in [-1, 1) for floats
    (0..9 for integers)."""
    import numpy as np

    torch = import_torch()
    dtype = np.dtype(dtype or np.float32)
    if dtype == np.float32 and value_range is None:
        g = torch.Generator().manual_seed(seed)
        return torch.rand(shape, generator=g) * 2 - 1
    from edge.random_inputs import generator, random_values

    lo, hi = value_range if value_range is not None else (
        (0, 9) if np.issubdtype(dtype, np.integer) else (-1.0, 1.0))
    return torch.from_numpy(random_values(generator(seed), shape, dtype, lo, hi))


@dataclass
class _Forward:
    """What a PyTorch route exports: `module` takes the tensors `examples` (named `names`, in
    the forward's order); `fixed` holds the non-tensor arguments fixed to --arg values."""

    module: object
    names: list
    examples: tuple
    fixed: dict = field(default_factory=dict)
    signature: str = None            # '(x: Tensor, sr: int)' of a TorchScript forward
    notes: list = field(default_factory=list)

    def shape_record(self):
        """{'input_shape': [..]} of a one-tensor export, else {} (see facts())."""
        return {"input_shape": list(self.examples[0].shape)} if len(self.examples) == 1 else {}

    @property
    def several(self):
        return bool(self.fixed) or len(self.examples) > 1

    def facts(self):
        """The sidecar's record of the exported inputs (only for several or fixed arguments)."""
        if not self.several:
            return {}
        out = {"inputs": [{"name": n, "shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")}
                          for n, x in zip(self.names, self.examples)]}
        if self.signature:
            out["forward"] = self.signature
        if self.fixed:
            out["fixed_arguments"] = dict(self.fixed)
        if self.notes:
            out["shape_notes"] = list(self.notes)
        return out


def _load(source, options):
    """(module, exported_or_None, _Forward) for a PyTorch source artefact.

    One-tensor forwards export as before (input 'input', shape from --input-shape(s), the
    .pt2 or --size). A TorchScript forward with several arguments exports its tensors under
    their argument names, shaped by --input-shapes NAME:[..] (or --data), with every other
    argument fixed to its --arg value (or default) in a scripted wrapper; a .pt2 with several
    inputs exports them under their names, its open dimensions filled by the user's shapes
    or a placeholder that is named in a progress line and in the sidecar.
    """
    model, ep = load_source(source, options)
    ov = _stateless_overrides(source, options.input_overrides)
    ranges = (lambda n: ov.range_for(n)) if ov is not None else (lambda n: None)
    args = script_arguments(model) if ep is None else None
    if args is not None and not (len(args) == 1 and str(args[0].type) == "Tensor"):
        tensors, fixed, order = plan_script_call(args, ov, source.name, options.input_shape)
        module = fix_script_arguments(model, order, fixed) if fixed else model
        if fixed:
            options.progress(f"{source.name}: forward{schema_text(args)} exported with "
                             + ", ".join(f"{k}={v!r}" for k, v in fixed.items()) + " fixed")
        examples = tuple(_example(s, i, d, ranges(n)) for i, (n, s, d) in enumerate(tensors))
        return model, ep, _Forward(module, [n for n, _, _ in tensors], examples, fixed,
                                   schema_text(args))
    users = exported_inputs(ep) if ep is not None else None
    if users and len(users) > 1:
        shapes, notes = _exported_shapes(users, ov)
        for note in notes:
            options.progress(note)
        examples = tuple(_example(shapes[n], i, d, ranges(n)) for i, (n, _, d) in enumerate(users))
        return model, ep, _Forward(model, [n for n, _, _ in users], examples, notes=notes)
    if args is not None:  # forward(x: Tensor): its --input-shapes x:[..] or a bare shape
        shapes = dict(ov.shapes) if ov is not None else {}
        shape = shapes.get(args[0].name) or shapes.get(None)
        if shape and not options.input_shape:
            options.input_shape = tuple(shape)
    name = (forward_input_names(model, ep) or ["input"])[0]   # the source's own name
    if args is None and ov is not None and name in dict(ov.shapes) and not options.input_shape:
        options.input_shape = tuple(dict(ov.shapes)[name])      # a Python module's forward(x)
    shape = input_shape(options, source, ep)
    return model, ep, _Forward(model, [name], (_example(shape, 0, None, ranges(name)),))


def _state_outputs(source):
    """The state outputs (state_X_out) a rewritten TorchScript copy returns after its own."""
    return [r["output"] for r in (source.metadata or {}).get("state") or () if r.get("output")]


def _stateless_overrides(source, ov):
    """The user's input overrides for a TorchScript copy whose state a rewrite made explicit
    (rewrite/torchscript_state.py): its state inputs take the recorded shapes, and the --arg
    values the rewrite fixed in it are no longer arguments."""
    md = source.metadata or {}
    if not md.get("state"):
        return ov
    from dataclasses import replace as _replace

    state = {r["input"]: tuple(r["shape"]) for r in md["state"] if r.get("input")}
    if ov is None:   # library use without overrides: the state's shapes only
        from types import SimpleNamespace

        return SimpleNamespace(shapes=state, ranges={}, data=None, args={}, fixed={},
                               range_for=lambda name: None)
    fixed = md.get("fixed_arguments") or {}
    return _replace(ov, shapes={**dict(ov.shapes), **state},
                    args={k: v for k, v in (ov.args or {}).items() if k not in fixed})


def _exported_shapes(users, overrides):
    """{name: shape} for a .pt2's inputs: --input-shapes NAME:[..] where given, the model's
    own where fixed, else a placeholder (batch 1, any other open dimension 32) and a note."""
    shapes = dict(overrides.shapes) if overrides is not None else {}
    names = [n for n, _, _ in users]
    for name in shapes:
        if name not in names:
            raise InputError(f"--input-shapes names no input '{name}'" if name else
                             f"a bare --input-shapes fits a one-input model; this one has {len(names)}",
                             "the model's inputs are: " + ", ".join(names))
    out, notes = {}, []
    for name, shape, _ in users:
        if name in shapes:
            given = tuple(shapes[name])
            if len(given) != len(shape) or any(d is not None and d != g for d, g in zip(shape, given)):
                raise InputError(f"--input-shapes {name}:{list(given)} does not fit the model's "
                                 f"input [{','.join('?' if d is None else str(d) for d in shape)}]")
            out[name] = given
        elif any(d is None for d in shape):
            filled = tuple((1 if i == 0 and len(shape) > 1 else PLACEHOLDER_OTHER) if d is None else d
                           for i, d in enumerate(shape))
            out[name] = filled
            notes.append(f"input '{name}' [{','.join('?' if d is None else str(d) for d in shape)}] "
                         f"has open dimensions; exported it as {list(filled)} (a placeholder): set "
                         f"the real shape with --input-shapes {name}:[{','.join(map(str, filled))}]")
        else:
            out[name] = shape
    return out, notes


def _count_outputs(model, examples):
    torch = import_torch()
    with torch.no_grad():
        y = model(*examples)
    return len(flatten_outputs(y)), y


def _is_nchw_image(shape):
    return len(shape) == 4 and shape[1] in (1, 3, 4) and shape[-1] not in (1, 3, 4)


# ----------------------------------------------------------------------------------- ONNX

def torch_to_onnx(source, output_path, options):
    torch = import_torch()
    model, ep, fwd = _load(source, options)
    opset = int(options.opset or DEFAULT_OPSET)
    n_out, _ = _count_outputs(fwd.module, fwd.examples)
    input_names = list(fwd.names)
    state = _state_outputs(source)   # explicit state (rewrite/torchscript_state.py): last, by name
    n_out -= len(state)
    output_names = (["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]) + state
    dynamic_axes = None
    if options.dynamic_batch:
        dynamic_axes = {n: {0: "batch"} for n in input_names + output_names}
    import warnings

    try:
        with warnings.catch_warnings(), _native_output_discarded():
            warnings.simplefilter("ignore")
            torch.onnx.export(fwd.module, fwd.examples, os.fspath(output_path), opset_version=opset,
                              input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, dynamo=False, do_constant_folding=True)
    except Exception as e:
        raise EdgeportError(f"torch.onnx.export failed for {source.name} at opset {opset}: "
                            f"{_reason(e, model)}",
                            "try another --opset, or export the model to ONNX yourself") from None
    return {"opset": opset, **fwd.shape_record(), **fwd.facts(),
            "dynamic_batch": bool(options.dynamic_batch),
            "exporter": "torch.onnx.export (TorchScript-based, dynamo=False)",
            "versions": _versions("onnx")}


@contextlib.contextmanager
def _native_output_discarded():
    """torch.onnx.export writes the whole TorchScript graph to the native stderr when a pass
    fails ("Torch IR graph at exception"); its error is reported in one line instead."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


def _reason(error, model):
    """One line for an exporter's failure: the error's first line, its underlying cause (a
    chained exception's message), the TorchScript source line it points at, where an assertion
    without a message failed, and the module attributes the forward assigns (state kept
    between calls, which no exported model carries)."""
    import re
    import traceback

    line = first_line(error).split(" [Caused by")[0].strip()
    out = f"{type(error).__name__}: {line}" if line != type(error).__name__ else line
    cause, seen = error, {id(error)}
    while (cause.__cause__ or cause.__context__) is not None and id(cause.__cause__ or cause.__context__) not in seen:
        cause = cause.__cause__ or cause.__context__
        seen.add(id(cause))
    if cause is not error and first_line(cause) not in (line, type(cause).__name__):
        out += f": {first_line(cause)}"
    if str(error).strip() == "":
        frames = traceback.extract_tb(error.__traceback__)
        if frames:
            f = frames[-1]
            where = os.path.splitext(f.filename.split("site-packages" + os.sep)[-1])[0].replace(os.sep, ".")
            out += f" in {where}.{f.name}" + (f": `{f.line.strip()}`" if f.line else "")
    lines = str(error).splitlines()
    for i, t in enumerate(lines):
        if "<--- HERE" in t and i > 0 and lines[i - 1].strip():
            out += f" (at `{lines[i - 1].strip()}`)"
            break
    state = state_attributes(model) if model is not None else []
    if state:
        names = ", ".join(f"self.{n}" for n in state)
        out += f"; its forward keeps state between calls (assigns {names})"
    return re.sub(r"\s+", " ", out)


# --------------------------------------------------------------------------------- TFLite

def _litert():
    return require("litert_torch", "torch", "PyTorch -> TFLite", package="litert-torch")


def _exportable(model, source, examples):
    """An nn.Module torch.export can trace (TorchScript goes through TS2EPConverter)."""
    torch = import_torch()
    if isinstance(model, torch.jit.ScriptModule):
        try:
            from torch._export.converter import TS2EPConverter

            ep = TS2EPConverter(model, tuple(examples)).convert()
            return program_module(ep).eval()
        except Exception as e:
            raise EdgeportError(f"cannot turn TorchScript {source.name} into a torch.export program "
                                f"for litert-torch: {_reason(e, model)}",
                                "convert from the Python module (--torch-model) or a .pt2 instead"
                                ) from None
    return model


def _write_float_tflite(source, options, path, prepare=None):
    """litert-torch float conversion to `path`; returns facts about its input and output.

    `prepare(model, fwd)`, when given, may change the loaded model (in place) before export.
    """
    import io
    import logging

    litert_torch = _litert()
    model, ep, fwd = _load(source, options)
    if prepare is not None:
        prepare(model, fwd)
    if options.dynamic_batch:
        options.progress("TFLite: --dynamic-batch is ignored, the batch stays static (Edge TPU needs it)")
    module = _exportable(fwd.module, source, fwd.examples)
    shape = tuple(fwd.examples[0].shape)
    channel_last = len(fwd.examples) == 1 and _is_nchw_image(shape)
    n_out, y = _count_outputs(module, fwd.examples)
    out_4d = [i for i, t in enumerate(flatten_outputs(y)) if getattr(t, "ndim", 0) == 4]
    if channel_last:
        module = litert_torch.to_channel_last_io(module, args=[0], outputs=out_4d or None).eval()
        sample = (fwd.examples[0].permute(0, 2, 3, 1).contiguous(),)
    else:
        sample = tuple(fwd.examples)
    logging.getLogger("litert_torch").setLevel(logging.ERROR)
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            edge_model = litert_torch.convert(module, sample)
            edge_model.export(os.fspath(path))
    except Exception as e:
        raise EdgeportError(f"litert-torch could not convert {source.name}: {_reason(e, model)}",
                            "the model may use an op torch.export or litert-torch does not support") from None
    return {"input_shape": list(sample[0].shape), "input_layout": "NHWC" if channel_last else None,
            "output_layout_changed": out_4d if channel_last else [], "channel_last": channel_last,
            "forward": fwd}


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
            **(facts["forward"].facts() or {"input_shape": facts["input_shape"]}),
            "versions": _versions("litert-torch"),
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
    t0 = time.monotonic()
    state = {}

    def prepare(model, fwd):
        """Load the calibration images; AdaRound the PyTorch weights on them (before export)."""
        torch = import_torch()
        if len(fwd.examples) != 1:
            raise InputError(f"full-int8 calibration feeds images to one input, but {source.name} "
                             f"takes {len(fwd.examples)} tensors ({', '.join(fwd.names)})",
                             "PyTorch -> tflite-int8 takes models with one image input")
        shape = list(fwd.examples[0].shape)
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
        if not options.adaround:
            return
        if isinstance(model, torch.jit.ScriptModule):
            state["adaround"] = "skipped: TorchScript modules take no forward hooks"
            return
        arrays = [torch.from_numpy(a) for a in cal.arrays()]
        if channel_last:
            arrays = [a.permute(0, 3, 1, 2).contiguous() for a in arrays]
        t = time.monotonic()
        options.progress(f"AdaRound: rounding the weights on {len(arrays)} calibration images")
        state["adaround"] = adaround(model, arrays, sweeps=int(options.adaround_sweeps),
                                     damp=float(options.adaround_damp),
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
        float_bytes, rescale = normalize_for_int8(float_bytes, cal, options)
        corrected = 0
        if options.bias_correction:
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
            "output_rescale": rescale,
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


def _coreml_programs(torch, module, examples):
    """What coremltools may convert, in order of preference: (kind, program) pairs.

    TorchScript as is; else a torch.export program (ATen ops), then a torch.jit.trace of the
    same module as the fallback. torch.export is preferred: a trace keeps Python-int shape
    arithmetic (`x.view(x.size(0), -1)`) that coremltools 9 fails to convert; but coremltools'
    torch.export frontend lacks ops its TorchScript frontend has (`Unsupported fx node lstm`).
    The trace is made only when it is needed.
    """
    if isinstance(module, torch.jit.ScriptModule):
        yield "TorchScript", module
        return
    try:
        program = torch.export.export(module, tuple(examples)).run_decompositions({})
    except Exception:
        program = None
    if program is not None:
        yield "torch.export", program
    with torch.no_grad():
        yield "TorchScript (torch.jit.trace)", torch.jit.trace(module, tuple(examples))


def torch_to_coreml(source, output_path, options):
    import io

    from converters.routes.coremltools import (
        _classifier,
        _ct,
        _finish,
        compute_precision,
        deployment_target,
        image_input,
    )

    torch = import_torch()
    ct = _ct()
    model, ep, fwd = _load(source, options)
    shape = tuple(fwd.examples[0].shape)
    spec = dict(source.preprocessing or {})
    spec.update(options.preprocessing or {})
    layout = spec.get("layout") or ("NCHW" if _is_nchw_image(shape) else "NHWC")
    module = model
    image = None
    image_spec = spec
    if fwd.several:
        module = fwd.module  # tensors named after the forward's arguments, other arguments fixed
    elif len(shape) == 4 and layout == "NCHW" and spec.get("std") and spec.get("mean"):
        std = [float(s) for s in spec["std"]]
        if len(std) == shape[1] and len(set(std)) > 1:
            # Core ML's image scale is one number: scale by std[0], then fix each channel.
            module = _ChannelScale.wrap(model, [std[0] / s for s in std])
            image_spec = dict(spec, std=[std[0]])
        image = image_input(ct, "image", shape, image_spec, layout)
    n_out, y = _count_outputs(fwd.module, fwd.examples)
    classes = int(flatten_outputs(y)[0].shape[-1]) if n_out == 1 else None
    classifier, labels = _classifier(ct, options, classes)
    inputs = [image] if image else [ct.TensorType(name=n, shape=tuple(x.shape))
                                    for n, x in zip(fwd.names, fwd.examples)]
    failures, mlmodel, kind = [], None, None
    programs = _coreml_programs(torch, module, fwd.examples)
    while mlmodel is None:
        try:
            kind, program = next(programs)
        except StopIteration:
            break
        except InputError:
            raise
        except Exception as e:  # the trace itself failed
            failures.append(("TorchScript (torch.jit.trace)", _reason(e, model)))
            break
        if failures:
            options.progress(f"{source.name}: coremltools could not convert the {failures[-1][0]} program "
                             f"({failures[-1][1][:160]}); converting the {kind} program instead")
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # coremltools' progress bars
                mlmodel = ct.convert(program, source="pytorch", convert_to="mlprogram", inputs=inputs,
                                     classifier_config=classifier, compute_precision=compute_precision(ct, options),
                                     minimum_deployment_target=deployment_target(ct, options.coreml_target))
        except InputError:
            raise
        except Exception as e:
            failures.append((kind, _reason(e, model)))
    if mlmodel is None:
        raise EdgeportError(f"coremltools could not convert {source.name}: "
                            + "; ".join(f"{k}: {r}" if len(failures) > 1 else r for k, r in failures))
    meta = _finish(ct, mlmodel, output_path, options, spec or None, labels, image)
    meta["versions"] = {**meta.get("versions", {}), **_versions()}
    meta["route"] = f"{kind} -> coremltools (mlprogram)"
    if failures:
        meta["route_fallback"] = f"the {failures[0][0]} program failed in coremltools ({failures[0][1][:200]})"
    meta.update(fwd.facts() or {"input_shape": list(shape)})
    return meta


# ------------------------------------------------------------------------- registrations

conversion(formats.TORCH_FORMATS, formats.ONNX, extra="torch")(torch_to_onnx)
conversion(formats.TORCH_FORMATS, formats.TFLITE, extra="torch")(torch_to_tflite)
conversion(formats.TORCH_FORMATS, formats.TFLITE_INT8, extra="torch", needs=("calibration",))(torch_to_tflite_int8)
conversion(formats.TORCH_FORMATS, formats.COREML, extra="torch")(torch_to_coreml)
