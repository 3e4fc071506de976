"""Run one hop: convert, stamp, validate and only then name one artefact.

`_run_one_hop` makes (or keeps, when an earlier run's artefact matches: `_reuse`) the
artefact of one conversion on a route. `_run_hop` writes it through `atomic_output`: the
registered conversion runs on the hop's source (rewritten for the tool when one needs it),
provenance is embedded in the format's own metadata slot and in the sidecar
`NAME.edgeport.json`, and the artefact is validated against its source by
`converters.validation.validate.validate_pair` while it is still a hidden temp. A Core ML
program whose float16 overflows is converted again in float32.
"""

import contextlib
import copy
import dataclasses
import json
import os
import platform
import sys
import time

from converters import formats, rewrite
from converters.artefact import Artefact, package_versions, provenance, sha256_of
from converters.atomic import (
    atomic_output,
    output_lock,
    sweep_stale,
)
from converters.pipeline.plan import options_record, output_path
from edge import run as edge_run
from edge.errors import EdgeportError, InputError, MissingDependency
from edge.files import check_output, check_output_dir, same_file
from edge.sidecar import SUFFIX as SIDECAR_SUFFIX
from edge.sidecar import read_sidecar, sidecar_path


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


def _base_versions():
    v = {"python": platform.python_version()}
    v.update(package_versions("numpy"))
    return v


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
    # explicit streaming state (rewrite/tflite_state.py): the later hops' artefacts keep it
    if current.metadata.get("state"):
        md["state"] = current.metadata["state"]
    returned.pop("companions", None)
    md["conversion"] = {"name": conv.name, "seconds": round(seconds, 3), **returned}
    return md


def _hop_options(current, options, intermediate):
    """The options that validate a hop from `current`. The user's --input-shapes name the
    original model's inputs; a TFLite intermediate made in this run (onnx2tf's, channel-last)
    has every input fixed already, in its own layout, so the shapes are left out for it."""
    ov = options.input_overrides
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
    options.provenance = block
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
            md.update({k: given.metadata[k] for k in rewrite.CARRIED if given.metadata.get(k)})
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
        options.provenance = None
    return Artefact(final, fmt, md), seconds


def _float16_overflowed(fmt, validation, options):
    """A Core ML hop whose float16 program overflowed (its validation says so) and whose
    precision the user left to edgeport."""
    return (fmt == formats.COREML and not options.coreml_precision
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
