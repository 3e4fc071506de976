"""Folder mode (`convert_folder`): every model of a folder, in `jobs` processes.

Sources whose sha256 and options match the last run are skipped (state in
`.edgeport-convert.json`, `read_state`); `check_folder_plan` refuses, before anything is
converted, two sources writing one file or a source's output landing on another source.
"""

import contextlib
import hashlib
import json
import os
import time

from converters import formats
from converters.artefact import sha256_of
from converters.atomic import (
    check_writable_dir,
    output_lock,
    sweep_stale,
    terminate_as_interrupt,
    write_text_atomic,
)
from converters.pipeline.hop import ARTEFACT_SHA, NOT_VALIDATED
from converters.pipeline.model import Result, _missing_folders, _remove_if_empty, convert_model
from converters.pipeline.plan import options_record, parse_targets, planned_outputs
from edge import run as edge_run
from edge.errors import EdgeportError, InputError, ModelFormatError
from edge.files import check_path_text
from edge.sidecar import SUFFIX as SIDECAR_SUFFIX
from edge.sidecar import read_sidecar

STATE_FILE = ".edgeport-convert.json"


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


def check_folder_plan(models, targets, options, outdir):
    """Folder mode names artefacts without collisions. Before anything is converted, refuse
    (InputError, naming both) when two sources would write one file (`net.tflite` and
    `net.onnx` both make `net.ort`; two folders' `m.tflite` into one -o), and when any source
    would write over a source of the folder (`net.tflite --to ort` makes `net.onnx`, which
    is the user's own `net.onnx`), by name, link or inode. The rule is refusal, never a
    renamed artefact: an artefact's name is always its source's stem plus its format's suffix
    (a stateful TFLite's stateless rewrite: the stem plus `_stateless`, then the suffix)."""
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
