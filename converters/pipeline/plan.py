"""Plan a conversion before any work: targets, routes, the options each route needs.

`parse_targets` reads --to; `plan_each` finds each target's route (the cheapest one whose
conversions have the options they need); `check_needs` and `check_labels_fit` refuse, in one
line and before anything is written, what cannot work; `output_path` and `planned_outputs`
name every file a run would write; `options_record` is what of the options shapes a result
(provenance and the skip key).
"""

import copy
import dataclasses
import hashlib
import os

from converters import formats, rewrite
from converters.artefact import Artefact, sha256_of
from converters.registry import plan_route
from edge.errors import EdgeportError, InputError
from edge.files import check_path_text
from edge.sidecar import read_sidecar, sidecar_path

# What to pass when a conversion's `needs` option is missing.
NEED_FLAGS = {
    "calibration": "--calibration DIR (a folder of representative images)",
    "calibration_data": "--data FILE.npz (representative input arrays, keyed by input name)",
    "torch_model": "--torch-model module:factory",
    "labels": "--labels FILE",
    "preprocessing": "--size/--mean/--std",
}

# Options that say nothing about the result (left out of provenance and of the skip key).
# input_overrides is recorded as "inputs" (its shapes and --arg values) by options_record.
_NOT_RECORDED = ("quiet", "compiler", "timeout", "tolerances", "accept_unvalidated", "provenance",
                 "input_overrides", "bias_correction", "adaround", "adaround_sweeps", "adaround_damp",
                 "normalize_packed_outputs")


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
    d = {f.name: copy.deepcopy(getattr(options, f.name)) for f in dataclasses.fields(options)
         if f.name not in _NOT_RECORDED}
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if v not in (None, False)}
    digest = calibration_digest(options)
    if digest:
        out["calibration_sha256"] = digest
    given = options.input_overrides   # --input-shapes and --arg shape the export
    if given is not None and (given.shapes or given.args or given.fixed):
        out["inputs"] = {"shapes": {str(k): list(v) for k, v in sorted(given.shapes.items(), key=str)},
                         "args": dict(sorted(given.args.items()))}
        if given.fixed:   # --fix: inputs turned into constants
            out["inputs"]["fixed"] = dict(sorted(given.fixed.items()))
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


QUANTIZED = (formats.TFLITE_INT8, formats.EDGETPU)


def keeps_precision(conversion, target):
    """False for a hop that quantizes a float model on the way to a float target: ONNX, ORT,
    Core ML or float TFLite are never made from an int8 detour, whatever it saves (fewer
    rewrites, calibration data at hand); int8 and Edge TPU targets, and sources already int8,
    may take it."""
    return (target in QUANTIZED or conversion.source in QUANTIZED
            or conversion.target not in QUANTIZED)


def plan_each(source_format, targets, options, source=None, notes=None):
    """({target: route} of the targets that can be planned with these options, {target:
    InputError} of those that cannot: no route, or a conversion on it misses an option).
    With the `source` artefact, the route needing the fewest graph rewrites on it wins (then
    the cheapest); under --no-rewrite a route needing one is not taken, and when no other
    reaches the target the refusal names the rewrite. `notes` (a dict) gets {target: line}
    where the rewrites decided the route."""
    routes, refused = {}, {}
    needs = rewrite.needed_rewrites(source, options) if source is not None else (lambda c: [])
    off = rewrite.off(options)

    def plan(t, usable=None):
        ok = (lambda c: (usable is None or usable(c)) and keeps_precision(c, t)
              and not (off and needs(c)))
        return plan_route(source_format, t, usable=ok, rewrites=lambda c: len(needs(c)))

    def blocked(t, otherwise):
        """Under --no-rewrite, the refusal naming the rewrite the cheapest route needs (rather
        than a detour's own want), else `otherwise`."""
        try:
            c = off and next((c for c in plan_route(source_format, t) if needs(c)), None)
        except InputError:
            c = None
        return InputError(rewrite.refusal(c, needs(c)), "drop --no-rewrite") if c else otherwise

    for t in targets:
        try:
            try:
                route = plan(t)
            except InputError as e:
                raise blocked(t, e) from None
            try:
                check_needs({t: route}, options)
            except InputError as missing:
                # the cheapest route needs an option not given (a direct PyTorch -> int8 needs
                # photos): take the cheapest route whose every step has what it needs (e.g.
                # PyTorch -> TFLite float -> int8 calibrated on --data), else say why not
                try:
                    route = plan(t, usable=lambda c: not c.missing(options))
                except InputError:
                    raise blocked(t, missing) from None
            if notes is not None:
                _note_choice(notes, t, route, plan_route(source_format, t), needs, off)
            routes[t] = route
        except InputError as e:
            refused[t] = e
    return routes, refused


def _note_choice(notes, target, route, cheapest, needs, off):
    """{target: line} when the rewrites chose another route than the cheapest, or the route
    taken needs rewrites."""
    n = sum(len(needs(c)) for c in route)
    if [c.name for c in route] != [c.name for c in cheapest]:
        why = "needs no rewrite" if not n else f"needs {n} rewrite{'s' * (n != 1)}"
        skipped = ", ".join(f"{rw.name} ({k})" for c in cheapest for rw, k in needs(c))
        notes[target] = (f"route {target}: {' -> '.join([route[0].source] + [c.target for c in route])} "
                         f"{why}; the cheaper {' -> '.join([cheapest[0].source] + [c.target for c in cheapest])} "
                         f"needs {skipped or 'more'}" + (" (--no-rewrite)" if off else ""))
    elif n:
        names = ", ".join(f"{rw.name} ({k} {getattr(rw.impl, 'pattern', 'places')})"
                          for c in route for rw, k in needs(c))
        notes[target] = (f"route {target}: {' -> '.join([route[0].source] + [c.target for c in route])}, "
                         f"the cheapest of the routes needing the fewest rewrites: {names}")


def check_needs(routes, options):
    for target, route in routes.items():
        for c in route:
            for need in c.missing(options):
                names = (need,) if isinstance(need, str) else need
                flag = " or ".join(NEED_FLAGS.get(n, "--" + n.replace("_", "-")) for n in names)
                raise InputError(f"{c.name} (for --to {target}) needs {flag}",
                                 "edgeport never calibrates on random data" if "calibration" in names
                                 else None)


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


def planned_outputs(path, targets, options, outdir):
    """Every file converting `path` to `targets` in `outdir` would write (artefacts of every
    hop and their sidecars); empty when the source cannot be read or no route is planned (its
    own conversion then says why)."""
    try:
        fmt = formats.detect_format(path)
    except EdgeportError:
        return []
    # the same routes the conversion takes: the rewrites the source needs can choose them
    src = Artefact(path, fmt, {}) if os.path.isfile(path) else None
    routes, _ = plan_each(fmt, targets, options, source=src)
    stem = stem_of(path)
    finals = []
    for t, hops in _stateless_outputs(path, fmt, targets, options).items():
        routes.pop(t, None)   # a stateful TFLite's --to tflite: its stateless rewrite instead
        finals.append(output_path(outdir, stem + "_stateless", hops[0].target))
    finals += [output_path(outdir, stem, conv.target) for route in routes.values() for conv in route]
    out = []
    for final in finals:
        for p in (final, str(sidecar_path(final))):
            if p not in out:
                out.append(p)
    return out


def _stateless_outputs(path, fmt, targets, options):
    """{target: route} of the targets a stateful TFLite reaches through its stateless rewrite
    (converters/rewrite/tflite_state.py); {} when the file cannot be read here."""
    from converters.rewrite.tflite_state import stateless_route

    out = {}
    for t in targets:
        try:
            route = stateless_route(Artefact(path, fmt, {}), t, options)
        except (EdgeportError, OSError, ValueError):   # its own conversion says what is wrong
            return {}
        if route:
            out[t] = route
    return out
