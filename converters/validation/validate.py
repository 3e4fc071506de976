"""Validation: run a source and its converted models on the same inputs and compare outputs.

    report = validate(source, [converted, ...], ValidateOptions(...))   # the CLI
    report = validate_pair(source, converted, convert_options)          # after each hop
    report.passed, report.summary_line(), report.to_dict()

The pieces: runners (converters/validation/runners/), a data source (converters/validation/data.py), the
comparator (converters/validation/comparator.py) and the report (converters/validation/report.py).
"""

import json
import os
import warnings as _warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from converters import formats
from converters.options import ModelLoading
from converters.validation.comparator import Tolerances, compare_runs, stack_samples
from converters.validation.data import DataSource, fingerprint, image_files, resolve_preprocessing
from edge.errors import EdgeportError, InputError, first_line
from edge.files import printable

DEFAULT_RANDOM_SAMPLES = 10
DEFAULT_IMAGE_SAMPLES = 20
SAVED_OUTPUTS_VERSION = 1


def _saved_outputs_schema():
    from edge.readers import Int, List, Obj, Str

    model = Obj({"key": Str(16, pattern=r"m[0-9]{1,6}"), "file": Str(4096),
                 "sha256": Str(64, pattern=r"[0-9a-f]{64}"), "format": Str(64),
                 "outputs": List(Str(4096), 4096)})
    return Obj({"version": Int(1, 1), "fingerprints": List(Str(64), 1 << 20),
                "seed": Int(0, 1 << 64, optional=True), "models": List(model, 4096)})

PASSED, FAILED, STRUCTURAL, ERROR = "passed", "failed", "structure-only", "error"
# Each status means one thing: PASSED numbers were compared and are within tolerance; FAILED
# they were not, or the structure differs; STRUCTURAL only the structure was compared (no
# numbers: never passed); ERROR the artefact could not be run (not validated).


@dataclass
class ValidateOptions(ModelLoading):
    """The options of `validate`; the model-loading fields (torch_model, trust_pickle,
    keras_unsafe, input_shape, input_overrides) are ModelLoading's, shared with convert."""

    inputs: str = "random"           # "random" or a folder of images
    samples: int | None = None              # default: 10 random samples, or up to 20 images
    seed: int = 0
    tolerances: Tolerances = field(default_factory=Tolerances)
    preprocessing: dict | None = None       # overrides the sidecars' spec
    save_outputs: str | None = None
    load_outputs: str | None = None
    device: str = "auto"             # TFLite device (auto, cpu, usb, ...)
    runtime: str | None = None              # TFLite backend
    progress: Callable[[str], None] | None = None
    accept_unvalidated: bool = False  # exit 0 although some artefact was not validated by numbers
    images: list[str] | None = None              # these image files rather than the folder's (held-out ones)


@dataclass
class ModelResult:
    """One converted model against the source."""

    path: str
    format: str
    status: str = ERROR
    runner: dict = field(default_factory=dict)
    comparison: object = None        # comparator.PairResult
    structure: list = field(default_factory=list)   # (check, ok, detail) for structure-only
    message: str = ""
    warnings: list = field(default_factory=list)
    mean_ms: float = None
    outputs_from: str = "run"        # "run" or "loaded:<file>"
    error: object = None             # the load error, when status is ERROR
    floor: dict = None               # the noise floor as judged (floor.Floor.to_dict), numeric mode

    @property
    def name(self):
        return os.path.basename(self.path.rstrip("/"))

    @property
    def passed(self):
        """Numbers were compared and are within tolerance (structure only is not passed)."""
        return self.status == PASSED

    @property
    def validated(self):
        """False when no number was compared: structure only, or the artefact could not run."""
        return self.status in (PASSED, FAILED)

    def summary_line(self):
        """One line: 'valid: top-1 20/20, cosine 0.9993, max abs 0.012' or why not; 'top-1'
        only for an output whose role is class scores."""
        if self.status == ERROR:
            return f"not validated: {self.message}"
        if self.status == STRUCTURAL:
            bad = [f"{c}: {d}" for c, ok, d in self.structure if not ok]
            return (f"structure only, not validated: structure matches ({len(self.structure)} "
                    f"checks), numbers NOT compared: {self.message}"
                    ) if not bad else "structure MISMATCH: " + "; ".join(bad)
        cmp = self.comparison
        if self.status == FAILED and not (cmp and cmp.outputs):
            return f"MISMATCH: {self.message}"
        parts = []
        heads = [o for o in cmp.outputs if getattr(o, "headline", "") and o.role != "raw"]
        if heads:   # the first output's role metric: top-1 only for class scores
            o = next((x for x in heads if not x.passed), heads[0])
            parts.append(o.headline if len(cmp.outputs) == 1 else f"'{o.name}' {o.headline}")
        cos = [o.cosine for o in cmp.outputs if not np.isnan(o.cosine)]
        if cos:
            parts.append(f"cosine {min(cos):.4f}")
        mabs = [o.max_abs for o in cmp.outputs if not np.isnan(o.max_abs)]
        if mabs:
            parts.append(f"max abs {max(mabs):.3g}")
        k = (self.floor or {}).get("multiple")
        raised = [f for f in ((self.floor or {}).get("outputs") or {}).values()
                  if k and f.get("tolerance") is not None and f.get("floor")
                  and abs(f["tolerance"] - k * f["floor"]) <= 1e-9 * f["tolerance"]]
        if raised:   # the tolerance came from the noise floor: said where the verdict is
            worst = max(raised, key=lambda f: f["floor"])
            parts.append(f"atol {k:g} x noise floor {worst['floor']:.3g}")
        stats = ", ".join(parts)
        note = (self.runner or {}).get("note")   # e.g. the Core ML reference executor
        if self.status == PASSED:
            return f"valid: {stats}" + (f" ({note})" if note else "")
        reasons = "; ".join([f"'{o.name}': {o.reason}" for o in cmp.outputs if not o.passed]
                            + ([self.message] if self.message else []))
        return f"MISMATCH: {reasons}" + (f" ({stats})" if stats else "") + (f"; {note}" if note else "")


@dataclass
class ValidationReport:
    source: dict
    results: list = field(default_factory=list)
    inputs: str = ""
    warnings: list = field(default_factory=list)
    source_ms: float = None
    signature: object = None         # signature.Signature of the source's inputs, as run
    outputs: dict = field(default_factory=dict)   # path -> (Artefact, {output: (S, ...)}), as run
    sample_files: list = None        # the images the samples came from, in order (image inputs)
    data_note: str = ""              # on what data the verdict was reached (int8: held out or not)
    steps_note: str = ""             # streaming models: "N steps, state fed back"

    @property
    def placeholders(self):
        return self.signature.placeholders if self.signature is not None else {}

    def placeholder_note(self):
        """'' or the words saying the verdict rests on shapes nobody chose."""
        return placeholder_note(self.signature)

    accept_unvalidated: bool = False

    @property
    def passed(self):
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def exit_code(self):
        """0 only when every artefact passed (or, with accept_unvalidated, every artefact
        whose numbers were compared passed and the rest only could not be validated); 2 when
        an artefact could not be loaded; else 1."""
        if any(r.status == ERROR for r in self.results) and not self.accept_unvalidated:
            return 2
        if self.passed:
            return 0
        if self.accept_unvalidated and self.results and all(
                r.passed or r.status in (STRUCTURAL, ERROR) for r in self.results):
            return 0
        return 1

    def summary_line(self):
        if len(self.results) == 1:
            line = self.results[0].summary_line()
        else:
            ok = sum(r.passed for r in self.results)
            line = f"{ok}/{len(self.results)} models valid"
        notes = [n for n in (self.placeholder_note(), self.steps_note, self.data_note) if n]
        return f"{line} ({'; '.join(notes)})" if notes else line

    def to_dict(self):
        from converters.validation.report import report_dict

        return report_dict(self)


def placeholder_note(signature):
    """'' or the words saying a verdict on `signature` (signature.Signature or None) rests on
    shapes nobody chose."""
    ph = signature.placeholders if signature is not None else {}
    if not ph:
        return ""
    shapes = ", ".join(f"{n}:{s}" for n, s in ph.items())
    return (f"on placeholder input shapes ({shapes}), not ones the model or you fixed; "
            f"set them with --input-shapes")


# -- the pipeline's API ----------------------------------------------------------------------
def validate_pair(source, converted, options=None):
    """Validate one converted Artefact against its source Artefact, as `convert` does per hop.

    `options` is a ConvertOptions: its calibration folder (if any) gives real images, its
    --data arrays (`input_overrides`, else `calibration_data`) every sample of that file, else
    seeded random inputs; preprocessing, torch_model, input_shape are taken from it. A model
    quantized on --data arrays is so validated on the same kind of data.
    Returns a ValidationReport (`.passed`, `.summary_line()`).
    """
    vo = ValidateOptions()
    if options is not None:
        vo.inputs = options.calibration or "random"
        vo.preprocessing = options.preprocessing
        vo.torch_model = options.torch_model
        vo.input_shape = options.input_shape
        vo.trust_pickle = bool(options.trust_pickle)
        vo.keras_unsafe = bool(options.keras_unsafe)
        vo.input_overrides = options.input_overrides
        if vo.input_overrides is None and options.calibration_data:
            from converters.validation.signature import InputOverrides

            vo.input_overrides = InputOverrides.parse(data=options.calibration_data)
        vo.device = "cpu" if converted.format != formats.EDGETPU else "auto"
        # the judgement flags convert shares with validate (--atol, --output-role, thresholds)
        if options.tolerances is not None:
            vo.tolerances = options.tolerances
    note = _calibration_holdout(converted, options, vo)
    report = validate(source, [converted], vo)
    report.data_note = note
    from converters.validation.runners.tflite import EdgeTPUUnavailable, NeedsEdgeTPU

    err = report.results[0].error if report.results else None
    if isinstance(err, NeedsEdgeTPU):
        raise EdgeTPUUnavailable(
            f"{converted.name} needs an Edge TPU to run and none is usable here",
            f"on a device: edgeport validate {source.name} {converted.name} --save-outputs "
            f"out.npz; then here: edgeport validate ... --load-outputs out.npz")
    return report


def _calibration_holdout(converted, options, vo):
    """A quantized artefact is validated on the calibration samples held back from it
    (converters/quantize/calibration.py); returns the note saying on what data."""
    from converters.quantize.calibration import validation_holdout

    if options is None:
        return ""
    images, data, note = validation_holdout((converted.metadata or {}).get("calibration"),
                                            options.calibration, options.calibration_data)
    if images:
        vo.images = images
    if data is not None:
        from converters.validation.signature import InputOverrides

        ov = vo.input_overrides
        if ov is None or ov.data_path in (None, options.calibration_data):
            vo.input_overrides = replace(ov or InputOverrides(), data=data,
                                         data_path=options.calibration_data)
    return note


# -- the command's API -----------------------------------------------------------------------
def _make_runner(artefact, opts):
    from converters.validation import state
    from converters.validation.runners import runner_for

    runner = runner_for(artefact, device=opts.device, runtime=opts.runtime,
                        torch_model=opts.torch_model, input_shape=opts.input_shape,
                        trust_pickle=opts.trust_pickle, keras_unsafe=opts.keras_unsafe,
                        overrides=opts.input_overrides)
    return state.wrap(runner, artefact.metadata)   # a streaming model: its state fed back


def _run_all(runner, source, samples, spec_of):
    """Outputs of every sample, stacked: OrderedDict name -> (S, ...)."""
    from converters.validation.runners.coreml import is_image_input
    from edge.tensors import dequantize

    borrowed_in, borrowed_out = getattr(runner, "borrowed_quantization", ({}, {}))
    metas = [m._replace(scale=borrowed_in[m.name][0], zero_point=borrowed_in[m.name][1])
             if m.name in borrowed_in else m for m in runner.input_metadata()]
    raw = {m.name for m in metas if is_image_input(runner, m.name)}
    from converters.validation.state import reset

    reset(runner)   # a streaming model starts from its initial state; the samples are its steps
    runs = []
    for s in samples:
        feed = source.feed(s, metas, spec_of(runner), raw)
        try:
            out = runner.infer(feed)
        except EdgeportError:
            raise
        except Exception as e:
            hint = None
            if getattr(source, "signature_note", None):
                hint = source.signature_note
            raise InputError(f"{runner.name}: inference failed: {first_line(e)}", hint) from None
        for name, (scale, zp) in borrowed_out.items():
            if name in out and np.issubdtype(out[name].dtype, np.integer):
                out[name] = dequantize(out[name], scale, zp)
        runs.append(out)
    return stack_samples(runs)


def borrow_quantization(src_runner, runner):
    """Integer inputs/outputs of `runner` that carry no quantization parameters (tf2onnx keeps
    a quantized TFLite's uint8 I/O as plain uint8; the Core ML model of that ONNX holds them as
    int32, Core ML having no 8-bit type) take the source's matching integer parameters, so
    their values are quantized and dequantized as the source's are.

    Returns ({input name: (scale, zp)}, {output name: (scale, zp)}) and sets it on the runner.
    """
    def pairs(src, conv):
        if not src or not conv:
            return {}
        by_name = {m.name: m for m in src}
        out = {}
        for i, m in enumerate(conv):
            if m.scale or not np.issubdtype(m.dtype, np.integer):
                continue
            ref = by_name.get(m.name) or (src[i] if i < len(src) and len(src) == len(conv) else None)
            if ref is not None and ref.scale and np.issubdtype(np.dtype(ref.dtype), np.integer):
                out[m.name] = (float(ref.scale), int(ref.zero_point))
        return out

    try:
        src_out = src_runner.output_metadata()
        conv_out = runner.output_metadata()
    except Exception:
        src_out = conv_out = None
    found = (pairs(src_runner.input_metadata(), runner.input_metadata()), pairs(src_out, conv_out))
    runner.borrowed_quantization = found
    return found


def _mean_ms(runner):
    t = runner.inference_times
    return round(1000.0 * float(np.mean(t)), 3) if t else None


@dataclass
class ModelRun:
    """One converted model as the run step left it: its result so far (runner description,
    timing, warnings, or why it could not run), its runner, and its outputs."""

    artefact: object
    result: ModelResult
    runner: object = None            # None when it could not be made or activated
    outputs: dict = None             # name -> (S, ...); None when not run (error, structure only)
    loaded: bool = False             # no device here: its outputs come from --load-outputs


@dataclass
class Runs:
    """What the run step produced: every model's outputs on the same samples, with timings.

    `reference` holds the source's outputs, `models` one ModelRun per converted model (in
    order), `noise` the source runtime's own variation (floor.Floor) or None, `saved` every
    output computed here (path -> (Artefact, outputs)), `prints` the samples' fingerprints.
    """

    source_runner: object
    reference: dict
    models: list
    source: dict = field(default_factory=dict)      # the source runner's description + mean_ms
    noise: object = None
    saved: dict = field(default_factory=OrderedDict)
    prints: list = field(default_factory=list)
    signature: object = None
    inputs: str = ""
    steps_note: str = ""     # streaming models: "N steps, state fed back"
    sample_files: list = None
    warnings: list = field(default_factory=list)


def validate(source, converted, opts=None):
    """Run `source` (Artefact) and each of `converted` (Artefacts) on the same inputs
    (run_models), then judge each model's outputs against the source's (compare_models).

    Load errors of the source raise InputError; those of a converted model are recorded in
    its ModelResult (status ERROR) so the others are still validated.
    """
    opts = opts or ValidateOptions()
    report = ValidationReport(source={"path": source.path, "format": source.format},
                              accept_unvalidated=bool(opts.accept_unvalidated))
    loaded = load_outputs(opts.load_outputs) if opts.load_outputs else None
    shared_spec = _shared_spec(source, converted, opts)
    opts = _torch_input_shape(source, opts, shared_spec)
    src_runner = _make_runner(source, opts)
    src_runner.activate()
    try:
        runs = run_models(src_runner, source, converted, opts, shared_spec, loaded)
        report.source.update(runs.source)
        report.signature, report.inputs = runs.signature, runs.inputs
        report.steps_note = runs.steps_note
        report.sample_files = runs.sample_files
        report.warnings.extend(runs.warnings)
        report.outputs = runs.saved      # the HTML report draws from these
        report.results = compare_models(runs, source, opts)
        if opts.save_outputs:
            save_outputs(opts.save_outputs, runs.saved, runs.prints, report.inputs, opts.seed)
    finally:
        src_runner.deactivate()
    return report


def _shared_spec(source, converted, opts):
    """The preprocessing spec every model is fed by: the flags', the source's, or the first
    converted model's sidecar's."""
    return opts.preprocessing or source.preprocessing or next(
        (a.preprocessing for a in converted if a.preprocessing), None)


def _torch_input_shape(source, opts, shared_spec):
    """PyTorch has no input signature: the preprocessing spec (flags or sidecars) gives it."""
    if source.format not in formats.TORCH_FORMATS or opts.input_shape or not shared_spec:
        return opts
    from converters.validation.runners.torch import _shape_from_metadata

    own = opts.preprocessing or source.preprocessing or {}
    torch_spec = dict(shared_spec, layout=own.get("layout") or "NCHW")  # PyTorch is NCHW
    return replace(opts, input_shape=_shape_from_metadata({"preprocessing": torch_spec}))


# -- the run step: every model on the same inputs --------------------------------------------
def run_models(src_runner, source, converted, opts, shared_spec=None, loaded=None):
    """Run the (activated) source runner and each of `converted` on the same samples; returns
    Runs; `loaded` (load_outputs) holds outputs saved on a device. Models that cannot be made, activated or run keep the reason in their ModelRun's
    result; a model that yields no numbers (Core ML off macOS) has its structure checked."""
    progress = opts.progress or (lambda m: None)
    ref_inputs = src_runner.input_metadata()
    ov = opts.input_overrides
    if ov is not None and ov.data:  # 'audio' feeds 'serving_default_audio:0' (onnx2tf, TF)
        from converters.quantize.calibration import data_for_inputs

        opts = replace(opts, input_overrides=replace(
            ov, data=data_for_inputs(ov.data, [m.name for m in ref_inputs])))
    models = _open_models(converted, opts, loaded)
    from converters.validation.state import pair

    pair(src_runner, [m.runner for m in models])   # streaming models: the state compared where both show it
    runs = Runs(src_runner, OrderedDict(), models)
    data, samples = _inputs(runs, ref_inputs, opts, shared_spec)
    progress(f"validate: {data.description}")

    def spec_of(runner):
        own = (runner.metadata or {}).get("preprocessing")
        if opts.preprocessing or not own:
            return data.spec
        return dict(data.spec or {}, **own)

    def run(r):
        return _run_all(r, data, samples, spec_of)

    runs.reference = run(src_runner)
    runs.source = dict(src_runner.describe(), mean_ms=_mean_ms(src_runner))
    runs.noise = _noise_floor(src_runner, [m.runner for m in models],
                              {id(m.runner) for m in models if m.runner is not None},
                              opts, run, runs.reference, progress)
    runs.saved[source.path] = (source, runs.reference)
    for m in models:
        if m.runner is not None:
            _run_model(m, runs, run, source, opts, loaded)
    return runs


def _open_models(converted, opts, loaded):
    """A ModelRun per converted model with its runner made and activated (a compiled model
    without a TPU may use saved outputs: its runner stays, marked `loaded`)."""
    models = []
    for art in converted:
        m = ModelRun(art, ModelResult(art.path, art.format))
        models.append(m)
        try:
            r = _make_runner(art, opts)
        except EdgeportError as e:
            m.result.message = str(e)
            continue
        try:
            r.activate()
        except EdgeportError as e:
            from converters.validation.runners.tflite import NeedsEdgeTPU

            if isinstance(e, NeedsEdgeTPU) and loaded is not None:
                m.runner, m.loaded = r, True
                continue
            m.result.message, m.result.error = str(e), e
            continue
        m.runner = r
    return models


def _inputs(runs, ref_inputs, opts, shared_spec):
    """The samples (images or seeded random values, shaped by the source) and the signature
    they follow: every open dimension fixed by the user, --data, or a named placeholder.
    Returns (DataSource, samples) and records the signature, description and fingerprints."""
    from converters.validation.signature import resolve

    others = [m.runner.input_metadata() for m in runs.models if m.runner is not None]
    images = list(opts.images) if opts.images else None
    if images is None and opts.inputs and opts.inputs != "random":
        images = image_files(opts.inputs)
    count = opts.samples or (len(images) if opts.images else
                             DEFAULT_IMAGE_SAMPLES if images else DEFAULT_RANDOM_SAMPLES)
    if opts.input_overrides is not None and opts.input_overrides.data and not opts.samples:
        count = None  # every sample of --data
    if count is not None and count < 1:
        raise InputError("--samples must be at least 1")
    sig = resolve(ref_inputs, opts.input_overrides, image_size=(shared_spec or {}).get("size"),
                  dim_names=runs.source_runner.dim_names())
    ref_inputs = sig.metas
    runs.signature = sig
    runs.warnings.extend(n for n in sig.notes if "placeholder" in n)
    spec = None
    if ref_inputs:
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always")
            spec = resolve_preprocessing(shared_spec, ref_inputs[0], images is not None)
        runs.warnings.extend(str(w.message) for w in caught)
    data = DataSource(ref_inputs, others, spec, images, count, opts.seed,
                      overrides=opts.input_overrides)
    for i, kind in enumerate(data.kinds):
        sig.inputs[i].feed = "image" if kind == "pixels" else "data"
    if sig.placeholders:
        data.signature_note = placeholder_note(sig)
    samples = data.samples()
    runs.inputs = data.description
    from converters.validation.state import steps_note

    runs.steps_note = steps_note([runs.source_runner, *(m.runner for m in runs.models)], len(samples))
    if runs.steps_note:
        runs.inputs = f"{runs.inputs}, {runs.steps_note}"
    runs.prints = [fingerprint(s) for s in samples]
    if images is not None:
        runs.sample_files = [p for p, _ in data.image_samples()]
    return data, samples


def _run_model(m, runs, run, source, opts, loaded):
    """Run one converted model (or take its saved outputs, or check its structure when it
    yields no numbers), then deactivate it."""
    r, res = m.runner, m.result
    res.runner = r.describe()
    try:
        if m.loaded:
            m.outputs = loaded.outputs_for(m.artefact, runs.prints)
            res.outputs_from = f"loaded:{os.path.basename(opts.load_outputs)}"
        elif not r.numbers:
            _structural(runs.source_runner, r, runs.reference, m.artefact, source, res)
        else:
            bi, bo = borrow_quantization(runs.source_runner, r)
            if bi or bo:
                res.warnings.append(
                    "integer I/O without quantization parameters ("
                    + ", ".join(list(bi) + [o for o in bo if o not in bi])
                    + "): quantized and dequantized with the source's parameters")
            m.outputs = run(r)
            res.mean_ms = _mean_ms(r)
            runs.saved[m.artefact.path] = (m.artefact, m.outputs)
    except EdgeportError as e:
        res.message = str(e)
    finally:
        r.deactivate()


# -- the compare step: each model's outputs judged against the source's -----------------------
def compare_models(runs, source, opts):
    """Judge every model that was run against the source's outputs, per output role; returns
    the ModelResults (status PASSED or FAILED for those, as the run step left the others)."""
    role_hints = None
    for m in runs.models:
        if m.outputs is None:
            continue
        if role_hints is None:   # the source's own metadata (TFLite), read once
            from converters.validation.roles import hints_for

            role_hints = hints_for(source)
            from converters.validation.state import state_roles

            role_hints = {**state_roles(runs.source_runner), **role_hints}   # the state, compared as is
        _judge(m, runs, source, opts, role_hints)
    return [m.result for m in runs.models]


def _judge(m, runs, source, opts, role_hints):
    """One model's verdict: tolerances (the runner's defaults, the noise floor), the
    comparison per output, the classifier's labels and a float16 overflow's cause."""
    r, res, art, ref_out = m.runner, m.result, m.artefact, runs.reference
    src_runner, noise = runs.source_runner, runs.noise
    mode = opts.tolerances.mode or (
        "numeric" if src_runner.precision == "float" and r.precision == "float"
        else "agreement")
    labels = source.labels or art.labels
    classifier = True if labels and len(ref_out) == 1 else None
    tolerances = _runner_tolerances(opts.tolerances, r)
    if mode == "numeric" and noise is not None:
        from converters.validation import floor as _floor

        tolerances = _floor.apply(tolerances, noise, ref_out)
    res.comparison = compare_runs(ref_out, m.outputs, tolerances, mode,
                                  reference_synthetic=src_runner.synthetic_names,
                                  converted_synthetic=r.synthetic_names,
                                  classifier=classifier, role_hints=role_hints,
                                  input_hw=_image_hw(runs.signature))
    res.warnings.extend(res.comparison.warnings)
    if mode == "numeric" and noise is not None:
        res.floor = noise.to_dict(res.comparison.outputs)
    res.status = PASSED if res.comparison.passed else FAILED
    label_check = _classifier_label_check(r, source, art, ref_out)
    if label_check and not label_check[1]:
        res.status = FAILED   # numbers match, but the classifier names other classes
        res.message = f"classifier labels: {label_check[2]}"
    if not res.comparison.outputs:
        res.message = "no outputs to compare"
    overflow = getattr(r, "fp16_overflow", None)   # the cause, when a float16 run overflowed
    if overflow and res.status == FAILED:
        res.message = overflow + (f"; {res.message}" if res.message else "")
    elif overflow:
        res.warnings.append(overflow)


def _image_hw(signature):
    """(H, W) of the source's first input when it is an image batch (NHWC or NCHW), else None."""
    metas = getattr(signature, "metas", None)
    shape = list(metas[0].shape) if metas else []
    if len(shape) != 4 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape[1:]):
        return None
    shape = [int(d) for d in shape]
    return (shape[1], shape[2]) if shape[3] in (1, 3, 4) else (shape[2], shape[3])


def _noise_floor(src_runner, runners, pending, opts, run, ref_out, progress):
    """The source runtime's own variation (converters/validation/floor.py) when a float
    artefact is to be judged numerically; None otherwise."""
    if src_runner.precision != "float" or opts.tolerances.mode not in (None, "numeric"):
        return None
    if not any(r is not None and id(r) in pending and r.precision == "float" for r in runners):
        return None
    from converters.validation import floor as _floor

    noise = _floor.floor_of(src_runner, run, ref_out)
    progress(f"validate: noise floor: {noise.method}")
    return noise


def _classifier_label_check(runner, source, art, ref_out):
    """("classifier labels", ok, detail) for a runner whose model carries class labels (Core
    ML), against the source's or the sidecar's labels; None when it carries none."""
    labels = runner.class_labels() if hasattr(runner, "class_labels") else None
    if labels is None:
        return None
    want_labels = source.labels or art.labels
    if want_labels is not None:
        wl = [str(x) for x in (want_labels if isinstance(want_labels, list) else
                               [want_labels[k] for k in sorted(want_labels)]
                               if isinstance(want_labels, dict) else [])]
        return ("classifier labels", not wl or wl == labels,
                f"{len(labels)} labels" + ("" if not wl or wl == labels else
                                            f", expected {len(wl)} from the sidecar"
                                            + (" (same labels, other order)"
                                               if sorted(wl) == sorted(labels) else "")))
    n = int(np.prod(next(iter(ref_out.values())).shape[1:])) if ref_out else 0
    return ("classifier labels", n in (0, len(labels)), f"{len(labels)} labels for {n} source classes")


def _runner_tolerances(tolerances, runner):
    """The runner's own defaults (the Core ML executor's for float16 programs) for every
    tolerance the user left at its default."""
    from dataclasses import fields, replace

    own = getattr(runner, "tolerance_defaults", None) or {}
    defaults = {f.name: f.default for f in fields(Tolerances) if f.name in own}
    changed = {k: v for k, v in own.items() if getattr(tolerances, k) == defaults.get(k)}
    return replace(tolerances, **changed) if changed else tolerances


# -- structure-only comparison (Core ML on Linux) ---------------------------------------------
def _structural(src_runner, runner, ref_out, art, source, res):
    """Compare inputs, outputs, shapes, dtypes, metadata and labels without running."""
    from converters.validation.comparator import align

    checks = []
    src_in = src_runner.input_metadata()
    conv_in = runner.input_metadata()
    checks.append(("input count", len(src_in) == len(conv_in), f"{len(src_in)} vs {len(conv_in)}"))
    for a, b in zip(src_in, conv_in):
        sa = tuple(1 if d is None else d for d in a.shape)
        sb = tuple(1 if d is None else d for d in b.shape)
        ok = align(np.zeros((1,) + sa), np.zeros((1,) + sb))[0] is not None
        checks.append((f"input '{b.name}' shape", ok, f"{list(a.shape)} vs {list(b.shape)}"))
    outs = runner.output_metadata() or []
    array_outs = [o for o in outs if o.shape]
    labels = runner.class_labels()
    want = len(ref_out)
    got = len(array_outs) if not labels else max(1, len(array_outs))
    checks.append(("output count", got == want or (labels and want == 1),
                   f"{want} vs {len(outs)}" + (" (classifier)" if labels else "")))
    for (_name, arr), o in zip(ref_out.items(), array_outs):
        ref_shape = tuple(arr.shape[1:])
        ok = align(np.zeros((1,) + ref_shape), np.zeros((1,) + tuple(o.shape)))[0] is not None \
            or int(np.prod(ref_shape)) == int(np.prod(o.shape))
        checks.append((f"output '{o.name}' shape", ok, f"{list(ref_shape)} vs {list(o.shape)}"))
        checks.append((f"output '{o.name}' dtype", np.issubdtype(o.dtype, np.floating)
                       == np.issubdtype(arr.dtype, np.floating), f"{arr.dtype} vs {o.dtype}"))
    label_check = _classifier_label_check(runner, source, art, ref_out)
    if label_check:
        checks.append(label_check)
    md = runner.model_metadata()
    checks.append(("metadata", True, ", ".join(f"{k}={v}" for k, v in md.items()
                                                 if v and k != "user_defined") or "none"))
    res.structure = checks
    res.status = STRUCTURAL if all(ok for _, ok, _ in checks) else FAILED
    res.message = getattr(runner, "structure_reason", None) or (
        "Core ML models run only on macOS, so on this machine only the structure was checked")


# -- saved outputs (Edge TPU on a device, compared elsewhere) --------------------------------
def save_outputs(path, saved, prints, inputs, seed):
    """Write every model's outputs with the inputs' fingerprints (npz, no pickles)."""
    from converters.artefact import sha256_of
    from converters.atomic import atomic_output

    arrays = {}
    meta = {"version": SAVED_OUTPUTS_VERSION, "fingerprints": prints, "inputs": inputs,
            "seed": seed, "models": []}
    for i, (p, (art, outs)) in enumerate(saved.items()):
        names = list(outs)
        meta["models"].append({"key": f"m{i}", "file": os.path.basename(p.rstrip("/")),
                               "sha256": sha256_of(p), "format": art.format, "outputs": names})
        for j, n in enumerate(names):
            arrays[f"m{i}_o{j}"] = outs[n]
    arrays["__meta__"] = np.array(json.dumps(meta))
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


class LoadedOutputs:
    def __init__(self, path, meta, arrays):
        self.path, self.meta, self.arrays = path, meta, arrays

    def outputs_for(self, artefact, prints):
        """The saved outputs of `artefact`, checked against the current inputs' fingerprints."""
        from converters.artefact import sha256_of

        digest = sha256_of(artefact.path)
        entry = next((m for m in self.meta["models"] if m["sha256"] == digest), None)
        if entry is None:
            names = ", ".join(m["file"] for m in self.meta["models"])
            raise InputError(f"{self.path} holds no outputs of {artefact.name} (this exact file; "
                             f"it has {names or 'none'})",
                             "save them on the device with --save-outputs from the same model file")
        saved = self.meta["fingerprints"]
        if saved[: len(prints)] != prints:
            raise InputError(f"the outputs in {self.path} were computed on other inputs "
                             f"({self.meta.get('inputs')}) than this run ({len(prints)} samples)",
                             "use the same --inputs, --samples and --seed as on the device")
        n = len(prints)
        out = OrderedDict()
        for j, name in enumerate(entry["outputs"]):
            arr = self.arrays[f"{entry['key']}_o{j}"]
            if arr.ndim == 0 or arr.shape[0] < n:
                got = 0 if arr.ndim == 0 else arr.shape[0]
                raise InputError(f"{printable(self.path)} holds {got} samples of output "
                                 f"'{printable(name)}' of {printable(artefact.name)}, this run has {n}",
                                 "use the same --inputs, --samples and --seed as on the device")
            out[name] = arr[:n]
        return out


def load_outputs(path):
    """The saved outputs at `path`, read by edge.readers (regular file, sizes checked before
    inflating, no pickles, truncation named) and checked against SAVED_OUTPUTS_SCHEMA."""
    from edge.files import printable
    from edge.readers import SchemaError, check_schema, parse_json, read_arrays

    hint = "pass a file written by --save-outputs"
    arrays = read_arrays(path, "saved outputs", hint=hint)
    shown = printable(path)
    if "__meta__" not in arrays:
        raise InputError(f"{shown} was not written by edgeport validate --save-outputs")
    raw = arrays.pop("__meta__")
    if raw.dtype.kind != "U" or raw.shape != ():
        raise InputError(f"saved outputs {shown}: its metadata is not text", hint)
    meta = parse_json(str(raw).encode("utf-8", "surrogatepass"), "saved outputs", path)
    if not isinstance(meta, dict) or meta.get("version") != SAVED_OUTPUTS_VERSION:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise InputError(f"{shown} has saved-outputs version {printable(version)}, "
                         f"expected {SAVED_OUTPUTS_VERSION}")
    try:
        meta = check_schema(meta, _saved_outputs_schema())
    except SchemaError as e:
        raise InputError(f"saved outputs {shown}: {e}", hint) from None
    for m in meta["models"]:
        for j in range(len(m["outputs"])):
            if f"{m['key']}_o{j}" not in arrays:
                raise InputError(f"saved outputs {shown}: output {j} of {printable(m['file'])} "
                                 "is missing (the file is damaged)", hint)
    return LoadedOutputs(path, meta, arrays)
