"""Convert one model to every target (`convert_model`): plan, then run each target's route.

Intermediates are artefacts too (`_int8.tflite` before `_edgetpu.tflite`) and are reused
across targets. Each target succeeds or fails on its own: the others are still made,
`Result.refused` holds one line per target that was not, and the exit code is the worst of
theirs (all refused: the first reason is raised).
"""

import dataclasses
import os

from converters.artefact import source_record
from converters.atomic import (
    check_writable_dir,
    terminate_as_interrupt,
)
from converters.pipeline.hop import NOT_VALIDATED, _run_one_hop
from converters.pipeline.plan import check_labels_fit, open_source, parse_targets, plan_each, stem_of
from edge.errors import EdgeportError
from edge.files import check_path_text


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
    notes = {}
    routes, refused = plan_each(source.format, targets, options, source=source, notes=notes)
    stateless = _stateless_routes(source, targets, options)   # a stateful TFLite's --to tflite
    for t in stateless:
        notes.pop(t, None)
    for line in notes.values():   # where graph rewrites decided the route (converters/rewrite)
        (progress or options.progress)(line)
    from converters.quantized_sources import refuse_quantized_routes

    refuse_quantized_routes(source, routes, refused)   # before any hop runs
    for t, route in stateless.items():   # its stateless rewrite, validated against it in steps
        routes[t] = route
        refused.pop(t, None)
    if not routes:
        e = refused[targets[0]]
        e.refused = {t: str(refused[t]) for t in targets}
        raise e
    check_labels_fit(source, options)
    from converters.rewrite.fixing import check_fixed_names

    check_fixed_names(source, options)   # --fix: every name an input of this source
    source.metadata["source"] = source_record(source)  # hash the original once, not per hop
    say = progress or options.progress
    result = Result(os.path.abspath(source.path), source.format,
                    {t: [source.format] + [c.target for c in r] for t, r in routes.items()})
    stem = stem_of(source.path)
    made = {source.format: source}
    refused.update(_run_routes(source, {t: r for t, r in routes.items() if t not in stateless}, options,
                               outdir, stem, made, force, validate, say, result, several=len(targets) > 1))
    for t, route in stateless.items():
        # named <stem>_stateless_<float|int8>.tflite beside the others; its own `made`, so the
        # source stays the start of every other route
        try:
            _run_one_hop(source, source, route[0], [source.format, route[0].target], options, outdir,
                         stem + "_stateless",
                         {}, force, validate, say, result)
            result.hops[-1]["target"] = t
        except EdgeportError as e:
            refused[t] = e
            if len(targets) > 1:
                say(f"--to {t}: {e}")
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
    unvalidated = bool(result.not_validated) and not options.accept_unvalidated
    result.exit_code = max([e.exit_code for e in refused.values()]
                           + [1 if result.validation_failed or unvalidated else 0])
    return result


def _stateless_routes(source, targets, options):
    """{target: route} of the targets a stateful TFLite source reaches through its stateless
    rewrite (converters/rewrite/tflite_state.py: `--to tflite`)."""
    from converters.rewrite.tflite_state import stateless_route

    out = {}
    for t in targets:
        route = stateless_route(source, t, options)
        if route:
            out[t] = route
    return out


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
