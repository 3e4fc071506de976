"""Shards of a model folder, and the manifests that say what each shard did.

A zoo too big for one machine is split across the runners of a CI job matrix:

    edgeport convert models/ --to onnx,tflite --shard 3/8 -o out/    (on runner 3 of 8)
    edgeport manifest merge out*/edgeport-manifest.shard-*-of-8.json -o merged.json

Shard K of N (K counted from 1) holds every model whose content hash h (sha256, as an
integer) has h % N == K - 1. The share of a model depends on its bytes alone, never on its
name, on the other files or on their order, so adding models moves no existing model to
another shard, and two runners never convert the same model. Identical files share a shard.

Each shard writes `edgeport-manifest.shard-K-of-N.json` into its output folder: per model the
source, its sha256, the targets, the outcome (converted / validated / refused / failed, with
the reason), every artefact with sha256 and size, and times in ms. It also records the
folder's fingerprint (the hash of every model's hash) so that `merge_manifests` can tell
when shards were made from different versions of the folder.
"""

import datetime
import hashlib
import json
import os
import re
import time

from edge.errors import InputError
from edge.sidecar import read_sidecar

SCHEMA = "edgeport-manifest/1"
OUTCOMES = ("converted", "validated", "refused", "failed")
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


# -- picking a share -------------------------------------------------------------------------
def parse_shard(text):
    """'3/8' -> (3, 8); K counts from 1 (1 <= K <= N). InputError otherwise."""
    m = _SHARD.match(str(text or "")) if len(str(text or "")) <= 40 else None
    if not m:
        raise InputError(f"--shard {text!r}: expected K/N, e.g. 1/4 (K counts from 1)")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise InputError(f"--shard {text}: K must be between 1 and N (K counts from 1), N at least 1")
    if n > MAX_SHARDS:
        raise InputError(f"--shard {text}: N is at most {MAX_SHARDS}")
    return k, n


def shard_of(sha256_hex, n):
    """The 1-based shard of a model whose content hash is `sha256_hex`, among `n` shards."""
    return int(sha256_hex, 16) % n + 1


def fingerprint(shas):
    """One hash for a folder's set of model hashes (order and names do not matter)."""
    return hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()


def manifest_name(k, n):
    return f"edgeport-manifest.shard-{k}-of-{n}.json"


# -- one shard ---------------------------------------------------------------------------------
def _artefact(path, fmt=None, status="kept", seconds=0.0, validation=None):
    """An artefact's manifest entry; validation from this run, else from its sidecar."""
    from converters.artefact import sha256_of, size_of

    side = read_sidecar(path)
    if fmt is None:
        from converters.formats import detect_format

        fmt = detect_format(path)
    return {"model": os.path.abspath(path), "format": fmt, "sha256": sha256_of(path),
            "size_bytes": size_of(path), "status": status, "time_ms": round(1000 * (seconds or 0.0), 1),
            "validation": validation if validation is not None else side.get("validation")}


def outcome_of(result, artefacts):
    """(outcome, reason) of one model's result dict from pipeline.convert_folder.

    refused: edgeport would not convert it (bad input, no route, missing option: exit 2);
    failed: a conversion broke, or an artefact failed validation (exit 1);
    validated: every artefact was checked against the model it was made from, and passed;
    converted: made, but at least one artefact was not validated (--no-validate, or no runner).
    """
    if result.get("status") == "failed" or result.get("error"):
        code = result.get("exit_code", 1)
        return ("refused" if code == 2 else "failed"), result.get("error") or "failed"
    checks = [a.get("validation") or {} for a in artefacts]
    bad = [a for a, v in zip(artefacts, checks) if v.get("passed") is False]
    if bad or result.get("validation_failed"):
        names = ", ".join(os.path.basename(a["model"]) for a in bad) or "an artefact"
        summary = next((v.get("summary") for v in checks if v.get("passed") is False), None)
        return "failed", f"validation failed for {names}" + (f": {summary}" if summary else "")
    if artefacts and all(v.get("passed") is True for v in checks):
        return "validated", None
    if not artefacts:
        return "converted", "nothing to do (the source is already in every target format)"
    return "converted", None


def model_record(result, folder, sha, targets, state_entry=None):
    """One model's manifest entry from its pipeline result dict."""
    if result.get("status") == "skipped":  # unchanged since the last run: its outputs are on disk
        hops = [{"path": p} for p in (state_entry or {}).get("outputs", [])]
    else:
        hops = result.get("artefacts") or []
    artefacts = [_artefact(h["path"], h.get("format"), h.get("status", "kept"), h.get("seconds"),
                           h.get("validation"))
                 for h in hops if os.path.exists(h["path"])]
    outcome, reason = outcome_of(result, artefacts)
    return {"model": os.path.relpath(result["source"], folder), "model_path": result["source"],
            "sha256": sha, "format": result.get("format"), "targets": list(targets),
            "outcome": outcome, "reason": reason,
            "skipped": result.get("status") == "skipped",
            "time_ms": round(result.get("ms", 0.0), 1), "artefacts": artefacts}


def shard_manifest(folder, k, n, targets, shas, chosen, results, state, started, wall_ms):
    """The manifest dict of shard k/n. `shas`: {path: sha256} of every model of the folder;
    `chosen`: the paths of this shard, in the order of `results`."""
    models = [model_record(r, folder, shas[p], targets, state.get(os.path.basename(p)))
              for p, r in zip(chosen, results)]
    return {"schema": SCHEMA, "shard": {"k": k, "n": n}, "folder": folder,
            "folder_models": len(shas), "folder_fingerprint": fingerprint(shas.values()),
            "targets": list(targets), "started": started, "wall_ms": round(wall_ms, 1),
            "host": os.uname().nodename if hasattr(os, "uname") else None,
            "counts": counts(models), "models": models}


def counts(models):
    c = dict.fromkeys(OUTCOMES, 0)
    for m in models:
        c[m["outcome"]] = c.get(m["outcome"], 0) + 1
    return c


def convert_shard(folder, targets, options, k, n, outdir=None, force=False, validate=True, jobs=1,
                  on_result=None):
    """Convert shard k/n of `folder` and write its manifest; returns (results, manifest_path).

    Already converted models (same source hash, same options, outputs present) are skipped
    by pipeline.convert_folder, so a rerun of one shard redoes only what is missing.
    """
    from converters import pipeline
    from converters.atomic import write_text_atomic

    folder = os.path.abspath(folder)
    outdir = os.path.abspath(outdir or folder)
    shas, chosen = {}, []

    def pick(by_path):
        shas.update(by_path)
        chosen.extend(p for p, s in by_path.items() if shard_of(s, n) == k)
        return list(chosen)

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    results = pipeline.convert_folder(folder, targets, options, outdir, force, validate, jobs,
                                      on_result=on_result, select=pick)
    wall_ms = 1000 * (time.perf_counter() - t0)
    state = pipeline.read_state(os.path.join(outdir, pipeline.STATE_FILE))
    manifest = shard_manifest(folder, k, n, pipeline.parse_targets(targets), shas, chosen, results,
                              state, started, wall_ms)
    path = os.path.join(outdir, manifest_name(k, n))
    write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")
    return results, path


# -- merging -----------------------------------------------------------------------------------
MAX_SHARDS = 4096   # a CI job matrix is far smaller; bounds --shard and every manifest read back
MAX_MODELS = 1 << 20


def manifest_schema():
    """The typed, bounded fields of a shard manifest (edge.readers spec)."""
    from edge.readers import Any, Bool, Float, Int, List, Obj, Str

    sha = Str(64, pattern=r"[0-9a-f]{64}")
    artefact = Obj({"model": Str(4096), "format": Str(64, optional=True), "sha256": sha,
                    "size_bytes": Int(0, 1 << 50, optional=True),
                    "status": Str(64, optional=True), "time_ms": Float(0, optional=True),
                    "validation": Any()})
    model = Obj({"model": Str(4096), "model_path": Str(4096, optional=True), "sha256": sha,
                 "format": Str(64, optional=True), "targets": List(Str(64), 64, optional=True),
                 "outcome": Str(16, choices=OUTCOMES), "reason": Str(1 << 16, optional=True),
                 "skipped": Bool(optional=True), "time_ms": Float(0, optional=True),
                 "artefacts": List(artefact, 256, optional=True)})
    counts = Obj({o: Int(0, MAX_MODELS, optional=True) for o in OUTCOMES}, strict=True, optional=True)
    return Obj({"schema": Str(64, choices=(SCHEMA,)),
                "shard": Obj({"k": Int(1, MAX_SHARDS), "n": Int(1, MAX_SHARDS)}, strict=True),
                "folder": Str(4096, optional=True), "folder_models": Int(0, MAX_MODELS, optional=True),
                "folder_fingerprint": Str(128, optional=True),
                "targets": List(Str(64), 64, optional=True), "started": Str(64, optional=True),
                "wall_ms": Float(0, optional=True), "host": Str(256, optional=True),
                "counts": counts, "models": List(model, MAX_MODELS)})


def load_manifest(path):
    """A shard manifest read by edge.readers.read_json: a regular file of at most the
    manifest limit, every field typed and bounded; one InputError line otherwise."""
    from edge.files import printable
    from edge.readers import read_json

    data = read_json(path, "manifest", "json", manifest_schema(),
                     hint=f"pass the shard manifests written by convert --shard ({SCHEMA})")
    k, n = data["shard"]["k"], data["shard"]["n"]
    if not 1 <= k <= n:
        raise InputError(f"manifest {printable(path)}: shard {k}/{n} is out of range")
    return data


def merge_manifests(paths):
    """Join shard manifests; returns the merged dict. Its `problems` lists every reason the
    zoo is incomplete or inconsistent (missing or repeated shards, a model in two shards, a
    model in the wrong shard, shards of different folder versions or targets); `passed` is
    true only with no problem and no refused or failed model.
    """
    if not paths:
        raise InputError("no manifest given", "pass the shard manifests, e.g. out*/edgeport-manifest.shard-*.json")
    loaded = [(os.path.abspath(p), load_manifest(p)) for p in paths]
    problems = []
    ns = sorted({d["shard"]["n"] for _, d in loaded})
    if len(ns) > 1:
        problems.append(f"manifests of different shard counts: N = {', '.join(map(str, ns))}")
    n = max(ns)
    seen = {}
    for path, d in loaded:
        k = d["shard"]["k"]
        if (k, d["shard"]["n"]) in seen:
            problems.append(f"shard {k}/{d['shard']['n']} given twice: {seen[(k, d['shard']['n'])]} and {path}")
        seen.setdefault((k, d["shard"]["n"]), path)
    missing = [k for k in range(1, n + 1) if (k, n) not in seen]
    if missing:
        problems.append(f"missing shard{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(f'{k}/{n}' for k in missing)}: its runner died or its manifest was "
                        "not collected (rerun that shard)")
    prints = {d.get("folder_fingerprint") for _, d in loaded}
    if len(prints) > 1:
        problems.append("the shards were made from different versions of the model folder "
                        "(folder fingerprints differ)")
    targets = {tuple(d.get("targets") or ()) for _, d in loaded}
    if len(targets) > 1:
        problems.append(f"the shards converted to different targets: {sorted(targets)}")
    models, where = [], {}
    for _path, d in loaded:
        k, dn = d["shard"]["k"], d["shard"]["n"]
        for m in d["models"]:
            name = m["model"]
            if name in where and where[name] != (k, dn):
                problems.append(f"{name} appears in two shards: {where[name][0]}/{where[name][1]} and {k}/{dn}")
                continue
            if name in where:
                continue
            where[name] = (k, dn)
            if shard_of(m["sha256"], dn) != k:
                problems.append(f"{name} is in shard {k}/{dn} but its hash puts it in shard "
                                f"{shard_of(m['sha256'], dn)}/{dn}")
            models.append(dict(m, shard=k))
    expected = {d.get("folder_models") for _, d in loaded}
    if not missing and len(expected) == 1 and None not in expected and len(prints) == 1:
        total = expected.pop()
        if len(models) != total:
            problems.append(f"the folder holds {total} models but the shards list {len(models)}")
    models.sort(key=lambda m: m["model"])
    c = counts(models)
    failed_shards = sorted({m["shard"] for m in models if m["outcome"] in ("refused", "failed")})
    return {"schema": SCHEMA.replace("manifest/", "merged-manifest/"), "n": n,
            "shards": [{"k": d["shard"]["k"], "n": d["shard"]["n"], "manifest": p, "counts": d.get("counts"),
                        "wall_ms": d.get("wall_ms"), "host": d.get("host")}
                       for p, d in sorted(loaded, key=lambda x: x[1]["shard"]["k"])],
            "missing_shards": missing, "failed_shards": failed_shards,
            "targets": list(next(iter(targets))) if len(targets) == 1 else None,
            "counts": c, "models": models, "problems": problems,
            "passed": not problems and c["refused"] == 0 and c["failed"] == 0}


def summary_table(merged):
    """Text: one row per shard and a total row (converted, validated, refused, failed)."""
    cols = ("shard",) + OUTCOMES + ("wall s",)
    rows = []
    for s in merged["shards"]:
        c = s.get("counts") or {}
        rows.append([f"{s['k']}/{s['n']}"] + [str(c.get(o, 0)) for o in OUTCOMES]
                    + [f"{(s.get('wall_ms') or 0) / 1000:.1f}"])
    for k in merged["missing_shards"]:
        rows.append([f"{k}/{merged['n']}"] + ["-"] * len(OUTCOMES) + ["MISSING"])
    rows.sort(key=lambda r: int(r[0].split("/")[0]))
    rows.append(["total"] + [str(merged["counts"][o]) for o in OUTCOMES] + [""])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    out = [line(cols)] + [line(r) for r in rows]
    bad = [m for m in merged["models"] if m["outcome"] in ("refused", "failed")]
    from edge.files import printable

    for m in bad:  # fields read from the manifests: escaped, each stays on its line
        out.append(f"{m['outcome']}: {printable(m['model'])} (shard {m['shard']}): {printable(m.get('reason'))}")
    for p in merged["problems"]:
        out.append(f"problem: {printable(p)}")
    return "\n".join(out)
