"""Small registered graph rewrites that get a model past an upstream tool's limit.

Imports: edge, converters, converters.routes
(from routes/ only onnx_inputs, the static shapes the routes use, and torch_loading, how
TorchScript is loaded and which attributes its forward assigns)

Each rewrite is registered once, in the module of its model family (tflite.py, onnx.py) or
a module of its own (tflite_state.py, tflite_rfft.py, onnx_fix.py, torchscript_state.py, ...);
a TorchScript rewrite takes and returns a ScriptModule (loaded with --trust-pickle's rule):

    @rewrite("tflite", "densify", needed_by=("tflite -> onnx", "tflite -> tflite-int8"))
    class Densify:
        def matches(model, options) -> int        # how many places need it (0: not needed)
        def apply(model, options) -> (model, n[, info])   # bytes -> bytes, or ModelProto -> ModelProto
        describe = "rewrote {n} DENSIFY into dense constants"
        pattern = "DENSIFY"                       # optional: what the tool refuses (for messages)
        wanted(options) -> bool                   # optional: False skips it without reading the model

`needed_by` names the conversions (registry names, "source -> target") whose tool refuses
the pattern. The pipeline (`prepare`) applies a rewrite only before such a conversion, and
only when its pattern matches the hop's source; it converts a rewritten copy in a temp
folder, and validates the result against the hop's own, unrewritten source. Each applied
rewrite is one line in the sidecar (`rewrites`) and in the progress output.
`--no-rewrite` (options.no_rewrite) turns them all off.

The planner (converters/pipeline/plan.py plan_each) counts, with `needed_rewrites`, the rewrites
each conversion out of the source's format needs on the source (`matches`), and takes the
route needing the fewest, then the cheapest; under --no-rewrite a route needing one is not
taken, and when none other reaches the target the refusal names the rewrite.
"""

import contextlib
import importlib
import os
import tempfile
from dataclasses import dataclass

REWRITE_MODULES = ("converters.rewrite.tflite", "converters.rewrite.onnx",
                   "converters.rewrite.tflite_state",
                   "converters.rewrite.onnx_fix", "converters.rewrite.tflite_fix",
                   "converters.rewrite.tflite_rfft", "converters.rewrite.tflite_transpose_conv_bias",
                   "converters.rewrite.tflite_bias_vector", "converters.rewrite.onnx_fold",
                   "converters.rewrite.tflite_face_geometry", "converters.rewrite.onnx_coreml",
                   "converters.rewrite.tflite_int8_ops", "converters.rewrite.tflite_fold",
                   "converters.rewrite.tflite_pow", "converters.rewrite.torchscript_state",
                   "converters.rewrite.torchscript_ops")
# What a rewrite returns in `info` that the artefacts made from it keep in their metadata:
# `state`, the explicit streaming state and how to feed it back (rewrite/tflite_state.py).
CARRIED = ("state",)
# family -> artefact formats it reads
FAMILIES = {"tflite": ("tflite", "tflite-int8"), "onnx": ("onnx",), "torchscript": ("torchscript",)}


@dataclass(frozen=True)
class Rewrite:
    family: str
    name: str
    needed_by: tuple
    impl: object

    def matches(self, model, options):
        return self.impl.matches(model, options)

    def apply(self, model, options):
        """(new model, count, info): `info` fills the description's other fields, and its
        `fixed_arguments` (inputs turned into constants) is recorded like `--arg`."""
        out = self.impl.apply(model, options)
        return out if len(out) == 3 else (out[0], out[1], {})

    def describe(self, count, info=None):
        import collections

        return self.impl.describe.format_map(collections.defaultdict(str, info or {}, n=count))


_REWRITES = {}
_loaded = False


def rewrite(family, name, needed_by):
    """Class decorator: register a rewrite of `family` ('tflite' or 'onnx')."""
    def register(impl):
        key = (family, name)
        if key in _REWRITES:
            raise RuntimeError(f"two rewrites registered as {family}.{name}")
        _REWRITES[key] = Rewrite(family, name, tuple(needed_by), impl)
        return impl

    return register


def rewrites():
    global _loaded
    if not _loaded:
        for module in REWRITE_MODULES:
            importlib.import_module(module)
        _loaded = True
    return [_REWRITES[k] for k in sorted(_REWRITES)]


def candidates(conversion_name, source_format):
    """The registered rewrites a conversion's tool needs, for a source of this format."""
    return [r for r in rewrites() if conversion_name in r.needed_by
            and source_format in FAMILIES.get(r.family, ())]


def needed_rewrites(source, options):
    """A function conversion -> [(Rewrite, matches)]: the rewrites a conversion out of
    `source`'s format needs on `source` (its tool refuses their pattern; each counted with
    `matches`), for the planner. Rewrites the user's options ask for (`wanted`, e.g. --fix)
    apply on every route alike and are not counted. Later hops' models do not exist yet: a
    conversion from another format needs none here."""
    models, memo = {}, {}

    def model_of(family):
        if family not in models:
            try:
                models[family] = _load(family, source.path, options)
            except Exception:  # the route's own reader says what is wrong with the file
                models[family] = None
        return models[family]

    def needs(conv):
        if conv.name not in memo:
            memo[conv.name] = []
            if conv.source == source.format and os.path.isfile(source.path):
                for rw in candidates(conv.name, source.format):
                    model = None if hasattr(rw.impl, "wanted") else model_of(rw.family)
                    n = _matches(rw, model, options) if model is not None else 0
                    if n:
                        memo[conv.name].append((rw, n))
        return memo[conv.name]

    return needs


def _matches(rw, model, options):
    try:
        return int(rw.matches(model, options))
    except Exception:  # a pattern that cannot be read is not counted; the tool says more
        return 0


def refusal(conv, needed):
    """The one line that refuses, under --no-rewrite, a conversion needing rewrites."""
    rw, n = needed[0]
    return (f"{conv.name} needs the rewrite {rw.name} ({n} {getattr(rw.impl, 'pattern', 'places')} in the "
            f"model, which its tool refuses), and --no-rewrite turns rewriting off")


def _load(family, path, options=None):
    if family == "torchscript":   # read as every PyTorch route reads it (--trust-pickle)
        from converters.routes.torch_loading import load_torchscript

        return load_torchscript(path, options is not None and options.trust_pickle)
    if family == "onnx":
        import os

        import onnx

        from converters import formats

        # external data is read only after its locations pass the checks every route applies
        # (inside the model's folder, no '..', no link, a regular file)
        model = onnx.load(path, load_external_data=False)
        if formats.external_data_files(model, path):
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
        return model
    with open(path, "rb") as f:
        return f.read()


def _save(family, model, path):
    """Write the rewritten copy into prepare()'s own fresh temp folder (a private temp, not one
    of the run's outputs: nothing else can see or hold that path)."""
    if family == "torchscript":
        import torch

        with open(path, "xb") as f:
            torch.jit.save(model, f)
        return
    data = model.SerializeToString() if family == "onnx" else bytes(model)
    with open(path, "xb") as f:
        f.write(data)


def off(options):
    return bool(options.no_rewrite)


@contextlib.contextmanager
def prepare(source, conversion, options):
    """Yields (the artefact to convert, [one line per rewrite applied], {input: value} of the
    inputs a rewrite turned into constants). With no rewrite needed (or --no-rewrite), that
    is `source` itself, [] and {}. Otherwise a rewritten copy, with the same file name, in a
    temp folder removed afterwards; `source` is never written. The copy's metadata adds what
    the rewrites returned under a CARRIED key (`state`), which the hop's artefact keeps."""
    todo = [] if off(options) else candidates(conversion.name, source.format)
    # a rewrite that only the user's options call for (`wanted`, e.g. --fix) never loads a model
    todo = [r for r in todo if getattr(r.impl, "wanted", lambda _o: True)(options)]
    if not todo or os.path.isdir(source.path):
        yield source, [], {}
        return
    family = todo[0].family
    model = _load(family, source.path, options)
    lines, fixed, carried = [], {}, {}
    for rw in todo:
        if not rw.matches(model, options):
            continue
        model, count, info = rw.apply(model, options)
        if count:
            lines.append(rw.describe(count, info))
            fixed.update(info.get("fixed_arguments") or {})
            carried.update({k: info[k] for k in CARRIED if info.get(k)})
    if not lines:
        yield source, [], {}
        return
    from converters.artefact import Artefact

    with tempfile.TemporaryDirectory(prefix="edgeport-rewrite-") as tmp:
        path = os.path.join(tmp, os.path.basename(source.path))
        _save(family, model, path)
        # the copy's own metadata also says which arguments it no longer takes (fixed in it)
        given = {**source.metadata, **carried, **({"fixed_arguments": fixed} if fixed else {})}
        yield Artefact(path, source.format, given), lines, fixed
