"""Run conversions: detect the source, plan each target's route, run its hops, record each.

    result = convert_model("net.keras", ["onnx", "tflite-int8"], options, outdir="out")

Each hop is one registered conversion written through `atomic_output` to
`<outdir>/<stem><formats.OUTPUT_SUFFIX[fmt]>`, stamped with provenance in the format's own
metadata slot and in the sidecar `NAME.edgeport.json`, then (unless validate=False) checked
against the artefact it was made from by `converters.validation.validate.validate_pair`. Intermediates
are artefacts too (`_int8.tflite` before `_edgetpu.tflite`) and are reused across targets.
An existing output is kept unless `force`. Each target succeeds or fails on its own: the
others are still made, `Result.refused` holds one line per target that was not, and the
exit code is the worst of theirs (all refused: the first reason is raised).

`convert_folder` does the same for every model of a folder, in `jobs` processes, skipping
sources whose sha256 and options match the last run (state in `.edgeport-convert.json`).
"""

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import platform
import sys
import time

from converters import formats, rewrite
from converters.artefact import Artefact, package_versions, provenance, sha256_of, source_record
from converters.atomic import (
    atomic_output,
    check_writable_dir,
    output_lock,
    sweep_stale,
    terminate_as_interrupt,
    write_text_atomic,
)
from converters.registry import plan_route
from edge import run as edge_run
from edge.errors import EdgeportError, InputError, MissingDependency, ModelFormatError
from edge.files import check_output, check_output_dir, check_path_text, same_file
from edge.sidecar import SUFFIX as SIDECAR_SUFFIX
from edge.sidecar import read_sidecar, sidecar_path

STATE_FILE = ".edgeport-convert.json"

# What to pass when a conversion's `needs` option is missing.
NEED_FLAGS = {
    "calibration": "--calibration DIR (a folder of representative images)",
    "calibration_data": "--data FILE.npz (representative input arrays, keyed by input name)",
    "torch_model": "--torch-model module:factory",
    "labels": "--labels FILE",
    "preprocessing": "--size/--mean/--std",
}

# Options that say nothing about the result (left out of provenance and of the skip key).
_NOT_RECORDED = ("quiet", "extra", "compiler", "timeout", "tolerances", "accept_unvalidated")


@dataclasses.dataclass
class Hop:
    """One artefact of a run: made now ('converted'), or already there ('kept'/'reused')."""

    artefact: Artefact
    conversion: str
    status: str
    seconds: float = 0.0
    validation: dict = None

    def as_dict(self):
        out = {"path": self.artefact.path, "format": self.artefact.format,
               "size": self.artefact.size(), "conversion": self.conversion, "status": self.status,
               "seconds": round(self.seconds, 3), "validation": self.validation}
        fixed = (self.artefact.metadata or {}).get("fixed_arguments")
        if fixed:
            out["fixed_arguments"] = fixed
        rewrites = (self.artefact.metadata or {}).get("rewrites")
        if rewrites:
            out["rewrites"] = list(rewrites)
        return out


@dataclasses.dataclass
class Result:
    source: str
    format: str = None
    routes: dict = dataclasses.field(default_factory=dict)
    hops: list = dataclasses.field(default_factory=list)
    status: str = "converted"       # converted | not validated | skipped | failed
    error: str = None
    exit_code: int = 0
    # Targets that could not be made while others were: {target: one-line reason}.
    refused: dict = dataclasses.field(default_factory=dict)

    @property
    def validation_failed(self):
        return any(h.get("validation") and h["validation"].get("passed") is False for h in self.hops)

    @property
    def not_validated(self):
        """Artefacts validated by nobody: validation could not run, or compared structure only
        (a hop made with --no-validate has no validation at all and is not counted)."""
        return [h["path"] for h in self.hops
                if h.get("validation") and h["validation"].get("passed") is None]

    def as_dict(self):
        return {"source": self.source, "format": self.format, "routes": self.routes,
                "artefacts": self.hops, "status": self.status, "error": self.error,
                "refused": self.refused, "validation_failed": self.validation_failed,
                "not_validated": self.not_validated}


def parse_targets(text):
    """'onnx,tflite-int8' -> ['onnx', 'tflite-int8'], each a known format."""
    items = [t.strip().lower() for t in (text if isinstance(text, (list, tuple)) else [text])
             for t in str(t).split(",")] if text else []
    items = [t for t in items if t]
    aliases = {"tflite-float": formats.TFLITE, "int8": formats.TFLITE_INT8, "mlpackage": formats.COREML}
    out = []
    for t in items:
        t = aliases.get(t, t)
        if t not in formats.ALL:
            raise InputError(f"unknown target format '{t}'",
                             "targets: onnx, ort, coreml, tflite, tflite-int8, edgetpu")
        if t not in out:
            out.append(t)
    if not out:
        raise InputError("no target format given", "pass --to FMT[,FMT...]")
    return out


def stem_of(path):
    return formats.model_stem(path)


def output_path(outdir, stem, fmt):
    return os.path.join(outdir, stem + formats.OUTPUT_SUFFIX.get(fmt, "." + fmt))


def options_record(options):
    """The options that shape a result, as a JSON-able dict (provenance and skip key)."""
    d = dataclasses.asdict(options)
    for k in _NOT_RECORDED:
        d.pop(k, None)
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if v not in (None, False)}
    digest = calibration_digest(options)
    if digest:
        out["calibration_sha256"] = digest
    given = getattr(options, "input_overrides", None)   # --input-shapes and --arg shape the export
    if given is not None and (given.shapes or given.args):
        out["inputs"] = {"shapes": {str(k): list(v) for k, v in sorted(given.shapes.items(), key=str)},
                         "args": dict(sorted(given.args.items()))}
    return out


def calibration_digest(options):
    """sha256 of what calibration reads (the --data file; the folder's top-level images), so
    an earlier artefact is not kept when the calibration set changed under the same name."""
    h, seen = hashlib.sha256(), False
    data, folder = options.calibration_data, options.calibration
    if data and os.path.isfile(data):
        h.update(b"data:" + sha256_of(data).encode())
        seen = True
    if folder and os.path.isdir(folder):
        from edge.preprocess import image_files

        for path in image_files(folder, warn=lambda m: None):
            h.update(os.path.basename(path).encode() + b":" + sha256_of(path).encode())
            seen = True
    return h.hexdigest() if seen else None


def open_source(path, options):
    path = check_path_text(path, "model path")
    if options.torch_model:
        if not os.path.exists(path):
            raise InputError(f"{path} does not exist")
        return Artefact(path, formats.TORCH_MODULE, read_sidecar(path))
    return Artefact.open(path)


def plan_each(source_format, targets, options):
    """({target: route} of the targets that can be planned with these options, {target:
    InputError} of those that cannot: no route, or a conversion on it misses an option)."""
    routes, refused = {}, {}
    for t in targets:
        try:
            route = plan_route(source_format, t)
            try:
                check_needs({t: route}, options)
            except InputError as missing:
                # the cheapest route needs an option not given (a direct PyTorch -> int8 needs
                # photos): take the cheapest route whose every step has what it needs (e.g.
                # PyTorch -> TFLite float -> int8 calibrated on --data), else say why not
                try:
                    route = plan_route(source_format, t, usable=lambda c: not c.missing(options))
                except InputError:
                    raise missing from None
            routes[t] = route
        except InputError as e:
            refused[t] = e
    return routes, refused


def check_needs(routes, options):
    for target, route in routes.items():
        for c in route:
            for need in c.missing(options):
                names = (need,) if isinstance(need, str) else need
                flag = " or ".join(NEED_FLAGS.get(n, "--" + n.replace("_", "-")) for n in names)
                raise InputError(f"{c.name} (for --to {target}) needs {flag}",
                                 "edgeport never calibrates on random data" if "calibration" in names
                                 else None)


def _base_versions():
    v = {"python": platform.python_version()}
    v.update(package_versions("numpy"))
    return v


MAX_LABELS = 100_000   # more classes than any classifier has (ImageNet-21k: 21,843)


def _class_count(source):
    """The class count of a classifier source when its file says so cheaply (the last
    dimension of its only output, TFLite or ONNX), else None."""
    try:
        if source.format in (formats.TFLITE, formats.TFLITE_INT8, formats.EDGETPU):
            from edge.tflite_model import TFLiteModel

            outs = TFLiteModel.load(source.path).outputs()
            shapes = [list(t.shape) for t in outs]
        elif source.format == formats.ONNX:
            import onnx

            m = onnx.load(source.path, load_external_data=False)
            shapes = [[d.dim_value if d.HasField("dim_value") else -1
                       for d in o.type.tensor_type.shape.dim] for o in m.graph.output]
        else:
            return None
    except Exception:  # the model's own reader says what is wrong with it, later
        return None
    if len(shapes) != 1 or not shapes[0] or shapes[0][-1] is None or shapes[0][-1] < 1:
        return None
    return int(shapes[0][-1])


def check_labels_fit(source, options):
    """Refuse --labels (one line, before any work) when it cannot be this model's: more than
    MAX_LABELS, or a count other than the model's classes (or classes - 1, a background
    class). The labels then always fit in the sidecar under its read limit."""
    if not options.labels:
        return None
    from converters.routes.coremltools import label_list
    from edge.files import printable
    from edge.labels import check_labels, read_labels

    labels = read_labels(options.labels)
    shown = printable(os.path.basename(os.fspath(options.labels)))
    if labels and max(labels) + 1 > MAX_LABELS:
        raise InputError(f"--labels {shown} has {max(labels) + 1:,} labels, more than the "
                         f"{MAX_LABELS:,} edgeport embeds", "pass the labels file made for this model")
    n = _class_count(source)
    if labels and n is not None and max(labels) + 1 not in (n, n - 1):
        raise InputError(f"--labels {shown}: {check_labels(labels, n)}",
                         "pass the labels file made for this model")
    return label_list(options.labels)


def _labels_of(options, current):
    if options.labels:
        from converters.routes.coremltools import label_list

        return label_list(options.labels)
    return current.labels


def _metadata(block, current, conv, options, returned, seconds):
    """The full metadata block of a new artefact (sidecar and embedded provenance): the hop's
    provenance `block`, plus what the conversion returned."""
    returned = dict(returned or {})
    md = dict(block, versions={**block["versions"], **(returned.pop("versions", {}) or {})})
    pre = dict(current.preprocessing)
    pre.update(options.preprocessing or {})
    pre.update(returned.pop("preprocessing", None) or {})
    md["preprocessing"] = pre or None
    md["labels"] = returned.pop("labels", None) or _labels_of(options, current)
    md["calibration"] = returned.pop("calibration", None) or current.metadata.get("calibration")
    md["opset"] = returned.pop("opset", None) or current.metadata.get("opset")
    # non-tensor forward arguments fixed by --arg (PyTorch routes); kept by the hops after
    fixed = returned.pop("fixed_arguments", None) or current.metadata.get("fixed_arguments")
    if fixed:
        md["fixed_arguments"] = fixed
    # packed outputs normalized for int8 (quantize/packed_outputs.py): every later hop's
    # artefact (Edge TPU) has the same outputs, so the record that undoes it is kept
    rescale = returned.pop("output_rescale", None) or current.metadata.get("output_rescale")
    if rescale:
        md["output_rescale"] = rescale
    returned.pop("companions", None)
    md["conversion"] = {"name": conv.name, "seconds": round(seconds, 3), **returned}
    return md


def _hop_options(current, options, intermediate):
    """The options that validate a hop from `current`. The user's --input-shapes name the
    original model's inputs; a TFLite intermediate made in this run (onnx2tf's, channel-last)
    has every input fixed already, in its own layout, so the shapes are left out for it."""
    ov = getattr(options, "input_overrides", None)
    if not (intermediate and ov is not None and ov.shapes and current.format in (formats.TFLITE,
                                                                                  formats.TFLITE_INT8)):
        return options
    from edge.tflite_model import TFLiteModel

    inputs = TFLiteModel.load(current.path).inputs()
    if any(t.shape_signature is not None and any(int(d) < 0 for d in t.shape_signature) for t in inputs):
        return options
    hop = copy.copy(options)
    hop.input_overrides = dataclasses.replace(ov, shapes={})
    return hop


NOT_VALIDATED = "not validated"


def _validate(source, converted, options):
    """{'status', 'passed', 'summary'} from converters.validation.validate. status: 'passed'
    (numbers compared, within tolerance; passed True), 'failed' (passed False), 'structure
    only' or 'not validated' (validation could not run; passed None for both: never a pass)."""
    def unvalidated(why):
        return {"status": NOT_VALIDATED, "passed": None, "summary": f"not validated: {why}"}

    try:
        import converters.validation.validate as validate
    except ModuleNotFoundError as e:
        if e.name == "converters.validation.validate":
            return unvalidated("converters.validation.validate is not installed")
        raise
    func = getattr(validate, "validate_pair", None)
    if func is None:
        return unvalidated("no validate_pair")
    try:
        report = func(source, converted, options)
    except MissingDependency as e:
        return unvalidated(e)
    except EdgeportError as e:
        return unvalidated(f"validation could not run: {e}")
    res = report.results[0] if report.results else None
    if res is not None and res.status == validate.STRUCTURAL:
        return {"status": "structure only", "passed": None, "summary": report.summary_line(),
                "inputs": report.inputs}
    if res is None or res.status == validate.ERROR:
        return dict(unvalidated(res.message if res is not None else "nothing compared"),
                    inputs=report.inputs)
    # how the source's outputs were computed, when not by its own runtime alone (a custom op
    # run by edgeport's reference of its kernel)
    how = {"source_run": report.source["note"]} if report.source.get("note") else {}
    return {"status": validate.PASSED if report.passed else validate.FAILED,
            "passed": bool(report.passed), "summary": report.summary_line(), "inputs": report.inputs,
            "outputs": _output_rows(res), **how}


def _output_rows(res):
    """Per output, the few numbers a reader of the sidecar or the HTML report wants: its role,
    verdict, the role's headline or the reason, and the largest error."""
    cmp = getattr(res, "comparison", None)
    rows = []
    for o in (cmp.outputs if cmp is not None else ()):
        rows.append({"name": o.name, "role": o.role, "passed": bool(o.passed),
                     "metric": o.headline or None, "max_abs": o.max_abs, "cosine": o.cosine,
                     "reason": o.reason or None})
    return rows


@contextlib.contextmanager
def _tool_output(quiet):
    """Keep stdout clean for results (--json) while converters run: their prints and native
    logs go to stderr, or nowhere with --quiet (the last lines are kept for error messages)."""
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    sink = tempfile.TemporaryFile() if quiet else None
    old_env = os.environ.get("TQDM_DISABLE")
    try:
        os.dup2(2, 1)
        if sink is not None:
            os.dup2(sink.fileno(), 2)
            os.environ["TQDM_DISABLE"] = "1"
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        if sink is not None:
            sink.close()
            if old_env is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = old_env


def quiet_frameworks():
    """Silence framework loggers that warn about untested versions on every import (used by
    `convert` before each hop and by `validate`)."""
    import logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("coremltools", "torchao", "torch", "tf2onnx", "absl", "ort_format_model"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _run_hop(current, conv, final, route, options, progress, validate=False, intermediate=False):
    """Convert, stamp and (with `validate`) validate one hop while it is still a hidden temp;
    only then write its sidecar and rename it to `final`. A kill, a full disk or a crash at
    any point before leaves nothing under the final name, so nothing unvalidated is kept."""
    fmt = conv.target
    block = provenance(current, fmt, route, options_record(options), _base_versions())
    options.extra["provenance"] = block
    t0 = time.perf_counter()
    try:
        quiet_frameworks()
        with atomic_output(final) as tmp:
            # A rewrite the tool needs converts a rewritten copy; validation below still
            # judges the result against `current`, the unrewritten source of this hop.
            with rewrite.prepare(current, conv, options) as (given, rewrites, fixed):
                for line in rewrites:
                    progress(f"{conv.name}: {line} (for the tool; validated against {current.name})")
                with _tool_output(options.quiet):
                    from converters.names import options_in_model_names

                    returned = conv.func(given, tmp, options_in_model_names(options, current)) or {}
                    if fmt in (formats.TFLITE, formats.TFLITE_INT8):  # kept only if plain LiteRT runs it
                        from converters.litert_check import require_plain_litert

                        require_plain_litert(tmp, f"the {fmt} model made by {conv.name}")
            seconds = time.perf_counter() - t0
            md = _metadata(block, current, conv, options, returned, seconds)
            if rewrites:
                md["rewrites"] = rewrites
            if fixed:   # inputs a rewrite made constants: recorded like --arg
                md["fixed_arguments"] = {**(md.get("fixed_arguments") or {}), **fixed}
            from converters.names import KEY as NAMES_KEY
            from converters.validation.names import record_names

            names = record_names(current, Artefact(tmp, fmt, md), options)  # one name per input
            if names:
                md[NAMES_KEY] = names
            from converters import metadata

            metadata.embed(tmp, fmt, md)
            if validate:
                progress(f"validating {os.path.basename(final)} against {current.name}")
                md["validation"] = _validate(current, Artefact(tmp, fmt, md),
                                             _hop_options(current, options, intermediate))
                if _float16_overflowed(fmt, md["validation"], options):
                    md = _redo_in_float32(current, conv, tmp, block, md, options, intermediate, progress)
            md[ARTEFACT_SHA] = sha256_of(tmp)
            Artefact(final, fmt, md).write_sidecar()
            for name in returned.get("companions") or ():
                dst = os.path.join(os.path.dirname(final), name)
                edge_run.guard_write(dst, "companion file")  # declared, and no input of the run
                os.replace(os.path.join(os.path.dirname(tmp), name), dst)
    finally:
        options.extra.pop("provenance", None)
    return Artefact(final, fmt, md), seconds


def _float16_overflowed(fmt, validation, options):
    """A Core ML hop whose float16 program overflowed (its validation says so) and whose
    precision the user left to edgeport."""
    return (fmt == formats.COREML and not getattr(options, "coreml_precision", None)
            and validation.get("passed") is False and "float16 overflow" in str(validation.get("summary")))


def _redo_in_float32(current, conv, tmp, block, md, options, intermediate, progress):
    """Convert the hop again with --coreml-precision float32 (into the same temp) and validate
    it; the sidecar keeps why (`precision_fallback`). Returns the new metadata."""
    import shutil

    from converters import metadata

    why = md["validation"]["summary"]
    progress(f"{os.path.basename(tmp)}: the float16 program overflows; converting again with "
             "--coreml-precision float32")
    float32 = copy.copy(options)   # every attribute kept (input_overrides too), precision changed
    float32.coreml_precision = "float32"
    shutil.rmtree(tmp) if os.path.isdir(tmp) else os.unlink(tmp)
    t0 = time.perf_counter()
    with _tool_output(options.quiet):
        returned = conv.func(current, tmp, float32) or {}
    md = _metadata(block, current, conv, float32, returned, time.perf_counter() - t0)
    md["precision_fallback"] = f"float32, because the float16 program overflowed ({why[:300]})"
    metadata.embed(tmp, conv.target, md)
    md["validation"] = _validate(current, Artefact(tmp, conv.target, md),
                                 _hop_options(current, float32, intermediate))
    md["validation"]["summary"] = ("float32 program (float16 overflowed): "
                                   + str(md["validation"].get("summary")))
    return md


# The sidecar records the sha256 of the artefact it describes: a file changed or replaced
# after edgeport wrote it is never mistaken for edgeport's own.
ARTEFACT_SHA = "artefact_sha256"


def _reuse(final, fmt, current, options):
    """('keep', Artefact) when `final` is this hop's artefact from an earlier run (its sidecar
    names this source's sha256, these options, and the file's own sha256); ('redo', why) when
    it is edgeport's artefact of another source or other options; InputError when edgeport did
    not make it (no sidecar, or a file changed since), since replacing it could lose data."""
    name = os.path.basename(final)
    side = read_sidecar(final)
    if not side.get("made_from") or not isinstance(side.get("source"), dict):
        raise InputError(f"{name} exists but edgeport did not make it (no provenance sidecar "
                         f"{name}{SIDECAR_SUFFIX}); it is not reused as an intermediate",
                         "--force replaces it, or -o writes elsewhere")
    recorded = side.get(ARTEFACT_SHA)
    if recorded is None or recorded != sha256_of(final):
        raise InputError(f"{name} exists but is not the file its sidecar describes "
                         "(changed or replaced since edgeport wrote it)",
                         "--force replaces it, or -o writes elsewhere")
    want = provenance(current, fmt, [], options_record(options))
    if side["source"].get("sha256") != want["source"].get("sha256"):
        return "redo", f"{name} was made from another source"
    if (side.get("made_from") or {}).get("format") != current.format:
        return "redo", f"{name} was made from a {side['made_from'].get('format')} model"
    if json.loads(json.dumps(side.get("options") or {}, sort_keys=True, default=str)) != \
            json.loads(json.dumps(want["options"], sort_keys=True, default=str)):
        return "redo", f"{name} was made with other options"
    return "keep", Artefact(final, fmt, side)


def convert_model(src, targets, options, outdir=None, force=False, validate=True, progress=None):
    """Convert one model to every target; returns a Result (raises EdgeportError on failure).

    A failed validation does not raise: the artefact is kept and Result.exit_code is 1.
    """
    targets = parse_targets(targets)
    source = open_source(src, options)
    outdir = os.path.abspath(check_path_text(outdir, "output folder") if outdir is not None
                             else os.path.dirname(os.path.abspath(source.path)))
    created = _missing_folders(outdir)
    try:
        with terminate_as_interrupt():
            return _convert_model(source, targets, options, outdir, force, validate, progress)
    except BaseException:
        _remove_if_empty(created)  # a failed run leaves no empty -o folder it created
        raise


def _missing_folders(path):
    """The folders of `path` that do not exist yet, deepest first."""
    out = []
    while path and not os.path.lexists(path):
        out.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return out


def _remove_if_empty(folders):
    for f in folders:
        try:
            os.rmdir(f)
        except OSError:
            break


def _convert_model(source, targets, options, outdir, force, validate, progress):
    check_writable_dir(outdir)
    # Each target succeeds or fails on its own: `--to a,b,c` makes what it can and says, one
    # line each, why the others were not made (exit code: the worst of theirs). Only when no
    # target can be made does the first reason stop the command, as with a single target.
    routes, refused = plan_each(source.format, targets, options)
    from converters.quantized_sources import refuse_quantized_routes

    refuse_quantized_routes(source, routes, refused)   # before any hop runs
    if not routes:
        e = refused[targets[0]]
        e.refused = {t: str(refused[t]) for t in targets}
        raise e
    check_labels_fit(source, options)
    source.metadata["source"] = source_record(source)  # hash the original once, not per hop
    say = progress or options.progress
    result = Result(os.path.abspath(source.path), source.format,
                    {t: [source.format] + [c.target for c in r] for t, r in routes.items()})
    stem = stem_of(source.path)
    made = {source.format: source}
    refused.update(_run_routes(source, routes, options, outdir, stem, made, force, validate, say, result,
                               several=len(targets) > 1))
    if refused and len(refused) == len(targets):
        e = refused[targets[0]]
        e.refused = {t: str(refused[t]) for t in targets}   # every target's own reason (JSON)
        done = [os.path.basename(h["path"]) for h in result.hops]
        if done:  # say what is there: the earlier hops' artefacts are complete and kept
            e.message += f" [done before this failure, and kept: {', '.join(done)}]"
        raise e
    result.refused = {t: str(refused[t]) for t in targets if t in refused}
    if result.not_validated:   # made, but nothing proves it works: never a plain success
        result.status = NOT_VALIDATED
    unvalidated = bool(result.not_validated) and not getattr(options, "accept_unvalidated", False)
    result.exit_code = max([e.exit_code for e in refused.values()]
                           + [1 if result.validation_failed or unvalidated else 0])
    return result


def _run_routes(source, routes, options, outdir, stem, made, force, validate, say, result, several=True):
    """Run every target's route; returns {target: EdgeportError} of the targets that failed.
    A hop that failed is not tried again for a later target that passes through it. With
    `several` targets each failure is said as it happens; a single target's failure is said
    once, by the error that ends the command."""
    failed_hops, refused = {}, {}
    for target, route in routes.items():
        if not route:
            say(f"{source.name} is already {target}: nothing to do")
            continue
        try:
            _run_route(source, route, options, outdir, stem, made, force, validate, say, result,
                       failed_hops)
        except EdgeportError as e:
            refused[target] = e
            if several:
                say(f"--to {target}: {e}")
    return refused


def _run_route(source, route, options, outdir, stem, made, force, validate, say, result, failed_hops):
    current = source
    chain = list(source.metadata.get("route") or [source.format])
    for conv in route:
        chain = chain + [conv.target]
        if conv.target in made:
            current = made[conv.target]
            continue
        if conv.target in failed_hops:
            raise failed_hops[conv.target]
        try:
            current = _run_one_hop(source, current, conv, chain, options, outdir, stem, made, force,
                                   validate, say, result)
        except EdgeportError as e:
            failed_hops[conv.target] = e
            raise


def _run_one_hop(source, current, conv, chain, options, outdir, stem, made, force, validate, say, result):
    """Make (or keep) one hop's artefact from `current`; returns it."""
    final = output_path(outdir, stem, conv.target)
    # The real file, not the spelling: a symlinked folder or a hard link is the source too.
    if os.path.abspath(final) == os.path.abspath(source.path) or \
            (os.path.lexists(final) and same_file(final, source.path)):
        raise InputError(f"the {conv.target} output would overwrite the source {final}",
                         "choose another folder with -o")
    decision = None
    if os.path.lexists(final) and not force:
        sweep_stale(final)
        decision, detail = _reuse(final, conv.target, current, options)
    if decision == "keep":
        art = detail
        hop = Hop(art, conv.name, "kept")
        say(f"{art.name} exists: kept (--force to convert again)")
        if validate and not isinstance(art.metadata.get("validation"), dict):
            # Made by a run with --no-validate (or an older edgeport): validate it now.
            with output_lock(final):
                say(f"validating {art.name} against {current.name} (never validated)")
                art.metadata["validation"] = _validate(current, art,
                                                       _hop_options(current, options, current is not source))
                art.write_sidecar()
        hop.validation = art.metadata.get("validation") if validate else None
    else:
        if decision == "redo":
            say(f"{detail}: converting again")
        # Before any work: never a device, FIFO or link (a package may be a folder).
        (check_output_dir if final.endswith(".mlpackage") else check_output)(final)
        check_output(str(sidecar_path(final)), "sidecar")
        # Locked from conversion to the sidecar write: another edgeport writing the
        # same output waits, so model, validation and sidecar are one run's.
        with output_lock(final):
            say(f"{conv.name}: converting {current.name}")
            art, seconds = _run_hop(current, conv, final, chain, options, say, validate,
                                    intermediate=current is not source)
            hop = Hop(art, conv.name, "converted", seconds)
            hop.validation = art.metadata.get("validation")
    made[conv.target] = art
    result.hops.append(hop.as_dict())
    return art


# -- folders -------------------------------------------------------------------------------
def find_models(folder):
    """Models in `folder` (not recursive), leaving out edgeport's own artefacts."""
    out = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith(".") or name.endswith((SIDECAR_SUFFIX, ".config", ".json", ".txt")):
            continue
        side = read_sidecar(path)
        if side.get("made_from"):  # made by edgeport: an artefact, not a source
            continue
        try:
            formats.detect_format(path)
        except ModelFormatError:
            # A damaged file named like a model is reported as failed, not silently skipped.
            if not name.lower().endswith((".tflite", ".onnx", ".ort", ".keras", ".h5", ".pt2", ".mlmodel")):
                continue
        except EdgeportError:
            continue
        out.append(path)
    return out


def _skip_key(path, targets, options, outdir, force):
    rec = options_record(options)
    rec.update(targets=list(targets), outdir=outdir)
    return hashlib.sha256(json.dumps(rec, sort_keys=True, default=str).encode()).hexdigest()


def _one(args, run=None, in_pool=False):
    """Worker: convert one source, never raise (a Result as a dict, with its time in ms).
    `run`: the command's edge.run.Run, active in the worker too (spawned workers start without).
    `in_pool`: a pool worker stopped by SIGTERM exits (143) once its temps are removed."""
    t0 = time.perf_counter()
    try:
        if run is not None and edge_run.current() is None:
            with run.active():
                r = _convert_one(*args)
        else:
            r = _convert_one(*args)
    except KeyboardInterrupt as e:
        if not in_pool:
            raise
        os._exit(getattr(e, "exit_code", 130))
    r["ms"] = round(1000 * (time.perf_counter() - t0), 1)
    return r


def _convert_one(src, targets, options, outdir, force, validate):
    try:
        r = convert_model(src, targets, options, outdir, force, validate)
        return r.as_dict() | {"exit_code": r.exit_code}
    except EdgeportError as e:
        return Result(os.path.abspath(src), status="failed", error=str(e)).as_dict() | {"exit_code": e.exit_code}
    except Exception as e:  # a bug in one model's conversion must not stop the others
        return (Result(os.path.abspath(src), status="failed", error=f"internal error: {type(e).__name__}: {e}")
                .as_dict() | {"exit_code": 1})


def convert_folder(folder, targets, options, outdir=None, force=False, validate=True, jobs=1,
                   on_result=None, select=None):
    """Convert every model of `folder`; returns a list of result dicts (in source order).

    `select({path: sha256})` -> paths, when given, picks the models to convert (a shard:
    see converters/manifest.py); the others are left alone, their state entries kept.
    """
    targets = parse_targets(targets)
    folder = os.path.abspath(check_path_text(folder, "folder"))
    outdir = os.path.abspath(folder if outdir is None else check_path_text(outdir, "output folder"))
    created = _missing_folders(outdir)
    try:
        with terminate_as_interrupt():
            results = _convert_folder(folder, targets, options, outdir, force, validate, jobs, on_result,
                                      select)
    except BaseException:
        _remove_if_empty(created)
        raise
    return results


def planned_outputs(path, targets, options, outdir):
    """Every file converting `path` to `targets` in `outdir` would write (artefacts of every
    hop and their sidecars); empty when the source cannot be read or no route is planned (its
    own conversion then says why)."""
    try:
        fmt = formats.detect_format(path)
    except EdgeportError:
        return []
    routes, _ = plan_each(fmt, targets, options)
    stem = stem_of(path)
    out = []
    for route in routes.values():
        for conv in route:
            final = output_path(outdir, stem, conv.target)
            for p in (final, str(sidecar_path(final))):
                if p not in out:
                    out.append(p)
    return out


def check_folder_plan(models, targets, options, outdir):
    """Folder mode names artefacts without collisions. Before anything is converted, refuse
    (InputError, naming both) when two sources would write one file (`net.tflite` and
    `net.onnx` both make `net.ort`; two folders' `m.tflite` into one -o), and when any source
    would write over a source of the folder (`net.tflite --to ort` makes `net.onnx`, which
    is the user's own `net.onnx`), by name, link or inode. The rule is refusal, never a
    renamed artefact: an artefact's name is always its source's stem plus its format's suffix."""
    writers = {}
    sources = {os.path.realpath(m): m for m in models}
    idents = {}
    for m in models:
        with contextlib.suppress(OSError):
            st = os.stat(m)
            idents[(st.st_dev, st.st_ino)] = m
    for m in models:
        for p in planned_outputs(m, targets, options, outdir):
            real = os.path.realpath(p)
            other = sources.get(real)
            if other is None and os.path.lexists(p):
                with contextlib.suppress(OSError):
                    st = os.stat(p)
                    other = idents.get((st.st_dev, st.st_ino))
            if other is not None:
                raise InputError(f"{os.path.basename(m)} would write {p}, which is the source "
                                 f"{os.path.basename(other)} of this folder: nothing was converted",
                                 "convert into another folder with -o, or move one of them")
            if real in writers and writers[real] != m:
                raise InputError(f"{os.path.basename(writers[real])} and {os.path.basename(m)} would "
                                 f"both write {p}: nothing was converted",
                                 "convert them into separate folders, or rename one")
            writers[real] = m


def _artefact_intact(path, outdir):
    """True when `path` (a recorded output) is inside `outdir`, exists, and is the file its
    sidecar describes (the sidecar's sha256 of it matches): a replaced file is never skipped."""
    real_out = os.path.realpath(outdir)
    real = os.path.realpath(path)
    if not real.startswith(real_out.rstrip(os.sep) + os.sep) or not os.path.exists(path):
        return False
    if path.endswith(SIDECAR_SUFFIX):
        return True
    try:
        side = read_sidecar(path)
        return bool(side.get(ARTEFACT_SHA)) and side.get(ARTEFACT_SHA) == sha256_of(path)
    except (EdgeportError, OSError, ValueError):
        return False


def _convert_folder(folder, targets, options, outdir, force, validate, jobs, on_result, select=None):
    check_writable_dir(outdir)
    models = find_models(folder)
    if not models:
        raise InputError(f"folder {folder} holds no model edgeport can read")
    state_path = os.path.join(outdir, STATE_FILE)
    state = _read_state(state_path, outdir)
    for path in models:  # another folder's model of the same name, converted into this -o
        prev = state.get(os.path.basename(path))
        if prev and isinstance(prev.get("source"), str) and "\0" not in prev["source"] \
                and os.path.realpath(prev["source"]) != os.path.realpath(path):
            raise InputError(f"{outdir} holds the conversion of {prev['source']}, another model named "
                             f"{os.path.basename(path)}; converting {path} there would replace it",
                             "convert each folder into its own -o folder")
    check_folder_plan(models, targets, options, outdir)
    shas = {path: sha256_of(path) for path in models}
    if select is not None:
        models = list(select(shas))
    results, todo, keys = {}, [], {}
    for path in models:
        sha = shas[path]
        key = _skip_key(path, targets, options, outdir, force)
        keys[path] = (sha, key)
        prev = state.get(os.path.basename(path))
        if (not force and prev and prev.get("sha256") == sha and prev.get("options") == key
                and all(_artefact_intact(p, outdir) for p in prev.get("outputs", []))):
            r = Result(path, prev.get("format"), prev.get("routes", {}), status="skipped").as_dict()
            r["exit_code"] = 0
            results[path] = r
            if on_result:
                on_result(r)
            continue
        # Outputs made for an older source or other options are redone (their sidecars say
        # so); a replaced artefact is refused, as in single-file mode, unless --force.
        todo.append((path, force))
    work = [(p, targets, options, outdir, redo, validate) for p, redo in todo]
    todo = [p for p, _ in todo]
    try:
        _convert_work(work, jobs, results, on_result, options)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (Terminated): keep what finished, then stop
        for path in todo:
            if path not in results:  # a killed worker's temps (a worker that ended cleanly has none)
                for out in planned_outputs(path, targets, options, outdir):
                    with contextlib.suppress(OSError):
                        sweep_stale(out)
        _write_state(state_path, outdir, [p for p in todo if p in results], results, keys)
        raise
    _write_state(state_path, outdir, todo, results, keys)
    return [results[p] for p in models]


def _write_state(state_path, outdir, done, results, keys):
    """Record the sources of `done` in the state file. Re-read under a lock and change only
    this run's entries: shards sharing an output folder on one machine must not drop each
    other's records."""
    with output_lock(state_path):
        state = _read_state(state_path, outdir)
        for path in done:
            r = results[path]
            if r["status"] in ("converted", NOT_VALIDATED) and r["exit_code"] == 0:
                sha, key = keys[path]
                state[os.path.basename(path)] = {"sha256": sha, "options": key, "format": r["format"],
                                                 "source": os.path.abspath(path),
                                                 "routes": r["routes"],
                                                 "outputs": [h["path"] for h in r["artefacts"]]}
            else:
                state.pop(os.path.basename(path), None)
        write_text_atomic(state_path, json.dumps(state, indent=2, sort_keys=True) + "\n")


# Cancellation: how long workers get to clean up (their temps, locks) after SIGTERM before
# they are killed; the whole stop stays well within 2 seconds.
STOP_GRACE_SECONDS = 1.0


def _worker_init():
    """Pool workers ignore Ctrl-C (the terminal sends it to the whole group): the parent stops
    them with SIGTERM, which a converting worker turns into the same cleanup (Terminated)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _convert_work(work, jobs, results, on_result, options):
    """Convert each item of `work` (in `jobs` processes), filling `results`; a progress line
    counts the models converted, with the time left."""
    from edge import console

    bar = console.progress(len(work), "folder: converting models", "model",
                           enabled=len(work) > 1 and console.shows_progress(options.progress))

    def done(r):   # each finished model: its result lines, then the count and time left
        if on_result:
            on_result(r)
        bar.step()

    with bar:
        if jobs > 1 and len(work) > 1:
            _run_pool(work, jobs, results, done)
        else:
            for w in work:
                r = _one(w)
                results[w[0]] = r
                done(r)


def _run_pool(work, jobs, results, on_result):
    """Convert `work` in `jobs` spawned processes. On Ctrl-C or SIGTERM: pending models are
    cancelled, running workers get SIGTERM (they remove their temps and exit), and any still
    alive after STOP_GRACE_SECONDS are killed; then the interrupt goes on to the caller."""
    import concurrent.futures
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # TF and torch do not survive fork
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init)
    try:
        futures = {pool.submit(_one, w, edge_run.current(), True): w[0] for w in work}
        for fut in concurrent.futures.as_completed(futures):
            r = fut.result()
            results[futures[fut]] = r
            if on_result:
                on_result(r)
    except BaseException:
        for fut, path in futures.items() if "futures" in locals() else ():
            if fut.done() and not fut.cancelled() and fut.exception() is None and path not in results:
                results[path] = fut.result()   # finished just before the interrupt
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


def _stop_workers(pool):
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for f in list(getattr(pool, "_pending_work_items", {}).values()):
        with contextlib.suppress(Exception):
            f.future.cancel()
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        with contextlib.suppress(Exception):
            if p.is_alive():
                p.kill()
                p.join(1.0)
    with contextlib.suppress(Exception):
        pool.shutdown(wait=False, cancel_futures=True)


def state_schema():
    """The typed, bounded fields of one entry of the folder state file (edge.readers spec)."""
    from edge.readers import Any, List, Map, Obj, Str

    entry = Obj({"sha256": Str(64, pattern=r"[0-9a-f]{64}"), "options": Any(),
                 "format": Str(64, optional=True), "routes": Map(List(Str(64), 64), 64, optional=True),
                 "outputs": List(Str(4096), 256)})  # and "source", checked where it is used
    return Map(entry, 1 << 20)


def read_state(path, outdir=None):
    """The folder's skip state, read by edge.readers.read_json; a state file that is damaged,
    not a regular file or off the schema counts as none (everything is redone). With `outdir`,
    a state listing an output outside that folder (`/etc/hostname`) is refused (InputError):
    edgeport never wrote it, and nothing it names is hashed or trusted."""
    from edge.readers import read_json

    if not os.path.lexists(path):
        return {}
    try:
        state = read_json(path, "state file", "json", state_schema())
    except EdgeportError:
        return {}
    if outdir is None:
        return state
    from edge.files import printable

    real_out = os.path.realpath(outdir)
    for name, entry in state.items():
        for out in entry.get("outputs") or ():
            real = os.path.realpath(os.path.join(real_out, out)) if "\0" not in out else ""
            if not real.startswith(real_out.rstrip(os.sep) + os.sep):
                raise InputError(f"the state file {printable(path)} was not written by edgeport: entry "
                                 f"{printable(name)!r} lists an output outside the output folder: "
                                 f"{printable(out)}", "remove it to convert the folder again")
    return state


_read_state = read_state
