"""The emulated Raspberry Pi checks of .ci/pi.sh (and of the arm64 GitHub workflow).

    pi_checks.py bigphotos OUTDIR PHOTO...        (with a python that has Pillow)
    pi_checks.py collect --python PY --fixtures DIR --photos DIR [--photos DIR ...] --out FILE.json
    pi_checks.py compare REFERENCE.json RESULT.json --label NAME
    pi_checks.py scripts ROOT VENV                  (console scripts of a virtualenv in ROOT)

`collect` runs edgeport's device-side commands with the interpreter PY (a virtualenv holding
one documented Pi combination) and records what they printed: classify (top-k text and
--json) on the Coral fixtures and on photos, bench, and eval on a folder of labelled photos.
It needs only the standard library, so Debian's bare python3 runs it inside the arm64 root.
`compare` checks RESULT (arm64) against REFERENCE (the same commands on x86-64): the same
top-k classes in the same order and every score within one quantization step of the output,
the same eval hits, a bench that ran. One line per check, then `pi[NAME]: N passed, M failed`.
Exit status 0 when all passed, 1 otherwise.
"""

import argparse
import json
import os
import subprocess
import sys

MODEL = "mobilenet_v1_0.25_128_quant.tflite"  # the Coral fixture that runs on a CPU
LABELS = "imagenet_labels.txt"
CORAL_IMAGES = ("bird.bmp", "grace_hopper.bmp", "sunflower.bmp")
K = 3


def _run(python, args, env_extra=None):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **(env_extra or {}))
    p = subprocess.run([python, "-m", "edgeport", *args], capture_output=True, text=True, env=env)
    return {"args": args, "rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr[-4000:]}


def _photos(folders):
    out = []
    for d in folders:
        out += [os.path.join(d, n) for n in sorted(os.listdir(d))
                if n.lower().endswith((".jpg", ".jpeg", ".png", ".bmp"))]
    return out


def parse_text(stdout):
    """{image: [[label, score], ...]} from classify's pycoral-style text output."""
    out, image, in_results = {}, None, False
    for line in stdout.splitlines():
        if line.startswith("==> ") and line.endswith(" <=="):
            image, in_results = line[4:-4], False
        elif line.startswith("-------RESULTS--------"):
            in_results = True
            out.setdefault(image, [])
        elif in_results and ": " in line:
            label, score = line.rsplit(": ", 1)
            out[image].append([label, float(score)])
    return out


def _norm(text):
    return "".join(ch for ch in text.lower() if ch.isalnum())


def evalset(photos, labels_path, out):
    """A folder of one sub-folder per class for `eval`: each photo whose name ends in an
    ImageNet class (gcompris_farm_sheep.jpg -> sheep) is copied into that class's folder."""
    import shutil

    names = {}
    with open(labels_path, encoding="utf-8") as f:
        for line in f:
            label = line.strip().split(" ", 1)[-1] if line[:1].isdigit() else line.strip()
            for syn in label.split(","):
                names.setdefault(_norm(syn), label)
    n = 0
    for p in photos:
        stem = os.path.splitext(os.path.basename(p))[0]
        label = names.get(_norm(stem.rsplit("_", 1)[-1]))
        if label:
            d = os.path.join(out, label.split(",")[0].strip())
            os.makedirs(d, exist_ok=True)
            shutil.copyfile(p, os.path.join(d, os.path.basename(p)))
            n += 1
    return n


def bigphotos(sources, out):
    """12 MP camera-like JPEGs (4000x3000, EXIF orientation 1 and 6) from bundled photos, so the
    checks cover the draft-mode decode path (needs Pillow: run with a virtualenv's python)."""
    from PIL import Image

    os.makedirs(out, exist_ok=True)
    for i, src in enumerate(sources):
        with Image.open(src) as im:
            big = im.convert("RGB").resize((4000, 3000), Image.BICUBIC)
        exif = Image.Exif()
        exif[0x0112] = 6 if i % 2 else 1  # 6: stored rotated, shown upright
        big.save(os.path.join(out, "camera_" + os.path.basename(src)), quality=90, exif=exif.tobytes())


SCRIPT = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from {module} import {head}
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit({call}())
"""


def scripts(root, venv):
    """Writes VENV/bin/NAME for every console script its packages declare, as pip writes them
    (the packages were put in site-packages by pip on the host, which writes scripts for the
    host's python). VENV is the path inside ROOT, as the scripts run there. Returns the names."""
    import configparser
    import glob

    bindir = os.path.join(root + venv, "bin")
    names = []
    for ep in sorted(glob.glob(os.path.join(root + venv, "lib", "python3*", "site-packages",
                                            "*.dist-info", "entry_points.txt"))):
        cp = configparser.ConfigParser(delimiters=("=",), interpolation=None)
        cp.optionxform = str
        cp.read(ep, encoding="utf-8")
        entries = [kv for sec in ("console_scripts", "gui_scripts") if cp.has_section(sec)
                   for kv in cp.items(sec)]  # pip writes both kinds the same way on Linux
        for name, target in entries:
            module, _, attr = target.split("[")[0].strip().partition(":")
            head = attr.split(".")[0]
            text = SCRIPT.format(python=f"{venv}/bin/python", module=module.strip(), head=head,
                                 call=attr.strip())
            path = os.path.join(bindir, name)
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(path + ".tmp", 0o755)
            os.replace(path + ".tmp", path)
            names.append(name)
    return names


def collect(a):
    fx = a.fixtures
    model, labels = os.path.join(fx, MODEL), os.path.join(fx, LABELS)
    coral = [os.path.join(fx, n) for n in CORAL_IMAGES]
    photos = _photos(a.photos)
    res = {"python": a.python}
    cls = ["classify", "-m", model, "-l", labels, "-k", str(K), "-c", "2"]
    res["classify_text_coral"] = _run(a.python, cls + ["-i", *coral])
    res["classify_json_coral"] = _run(a.python, cls + ["-i", *coral, "--json"])
    res["classify_json_photos"] = _run(a.python, cls + ["-i", *photos, "--json"])
    res["classify_text_photos"] = _run(a.python, cls + ["-i", *photos])
    res["bench"] = _run(a.python, ["bench", model, "--runs", "20", "--warmup", "2", "--json"])
    if a.eval_photos:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="edgeport-pi-eval.") as d:
            res["eval_images"] = evalset(_photos([a.eval_photos]), labels, d)
            res["eval"] = _run(a.python, ["eval", model, "--images", d, "--labels", labels,
                                          "-k", "5", "--json"])
    with open(a.out + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(a.out + ".tmp", a.out)
    return 0


def _json(run):
    return json.loads(run["stdout"])


def _by_image(run, names):
    """{basename: [[label, score], ...]} of a classify run (JSON or text)."""
    if "--json" in run["args"]:
        got = {r["image"]: [[c["label"], c["score"]] for c in r["classes"]] for r in _json(run)["results"]}
    else:
        got = parse_text(run["stdout"])
        if len(names) == 1 and None in got:
            got = {names[0]: got[None]}
    return {os.path.basename(k): v for k, v in got.items()}


def compare_classes(ref, res, step):
    """Problems (a list of strings) between two {image: [[label, score], ...]}."""
    bad = []
    if sorted(ref) != sorted(res):
        bad.append(f"images differ: {sorted(set(ref) ^ set(res))}")
    for img in sorted(set(ref) & set(res)):
        a, b = ref[img], res[img]
        if [x[0] for x in a] != [x[0] for x in b]:
            bad.append(f"{img}: top-{K} {[x[0] for x in b]} != x86 {[x[0] for x in a]}")
            continue
        for (label, sa), (_, sb) in zip(a, b):
            if abs(sa - sb) > step * 1.001:
                bad.append(f"{img}: {label} scores {sb} vs x86 {sa} (more than one step {step:.5f})")
    return bad


def compare(a):
    with open(a.reference) as f:
        ref = json.load(f)
    with open(a.result) as f:
        res = json.load(f)
    # One quantization step of the model's uint8 output (mobilenet_v1_0.25_128_quant: 1/256).
    step = a.step
    passed = failed = 0

    def report(name, problems):
        nonlocal passed, failed
        if problems:
            failed += 1
            print(f"FAIL {a.label} {name}: " + "; ".join(problems[:5]))
        else:
            passed += 1
            print(f"ok   {a.label} {name}")

    for name in ("classify_text_coral", "classify_json_coral", "classify_json_photos",
                 "classify_text_photos", "bench", "eval"):
        if name not in ref:
            continue
        r, x = ref[name], res.get(name)
        if x is None:
            report(name, ["not run"])
            continue
        if x["rc"] != 0 or r["rc"] != 0:
            report(name, [f"exit {x['rc']} (x86 {r['rc']}): {x['stderr'].strip()[-600:] or r['stderr'].strip()[-600:]}"])
            continue
        try:
            if name.startswith("classify"):
                names = [p for p in r["args"] if not p.startswith("-")]
                problems = compare_classes(_by_image(r, names), _by_image(x, names), step)
                if not _by_image(x, names):
                    problems.append("no results")
            elif name == "bench":
                rows = _json(x)
                rows = rows.get("results", rows.get("models", rows)) if isinstance(rows, dict) else rows
                problems = [] if rows else ["no benchmark rows"]
            else:  # eval
                mr, mx = _json(r)["models"][0], _json(x)["models"][0]
                problems = [f"{key} {mx[key]} != x86 {mr[key]}" for key in ("images", "top1_hits", "topk_hits")
                            if mr[key] != mx[key]]
        except (ValueError, KeyError, TypeError, IndexError) as e:
            problems = [f"unreadable output: {type(e).__name__}: {e}: {x['stdout'][:300]}"]
        report(name, problems)
    print(f"pi[{a.label}]: {passed} passed, {failed} failed")
    return 1 if failed else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--python", required=True)
    c.add_argument("--fixtures", required=True)
    c.add_argument("--photos", action="append", default=[])
    c.add_argument("--eval-photos", help="photos named after ImageNet classes (images/holdout)")
    c.add_argument("--out", required=True)
    b = sub.add_parser("bigphotos")
    b.add_argument("out")
    b.add_argument("sources", nargs="+")
    m = sub.add_parser("compare")
    m.add_argument("reference")
    m.add_argument("result")
    m.add_argument("--label", required=True)
    m.add_argument("--step", type=float, default=1 / 256)
    s = sub.add_parser("scripts")
    s.add_argument("root")
    s.add_argument("venv")
    a = p.parse_args(argv)
    if a.cmd == "scripts":
        print(" ".join(scripts(a.root, a.venv)))
        return 0
    if a.cmd == "bigphotos":
        return bigphotos(a.sources, a.out)
    return collect(a) if a.cmd == "collect" else compare(a)


if __name__ == "__main__":
    sys.exit(main())
