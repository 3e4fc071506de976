"""Camera photos end to end: edgeport's classify path against pycoral's example, in one process.

    python scripts/bench_photos.py [--model M.tflite] [--photos N] [--holdout N] [--out DIR] [--label L]

(.ci/pi.sh runs it inside the emulated Pi with EDGEPORT_PI_BENCH=1, labelled "emulated".)

1. Makes 12 MP camera JPEGs (4000x3000, quality 90, EXIF orientation: portrait photos are
   stored rotated with orientation 6, as a phone does) from the bundled photos (images/).
2. Photos per second over that folder, each method with the same interpreter, interleaved in
   rounds of a few photos so that machine load hits every method alike:
   - pycoral: classify_image.py's preprocessing, `Image.open(p).convert('RGB').resize(size,
     Image.LANCZOS)`, one photo after the other (it ignores EXIF orientation);
   - edgeport --exact-decode, serial: full decode + EXIF + LANCZOS (what classify did before);
   - edgeport, serial: the library's path (edge.classify.classify_images) decoding inline:
     draft-mode decode, classified on a second resampling of the same draft too, and decoded
     exactly when the two disagree (edge.classify.decode_noise_call);
   - edgeport classify: the same with decoding on worker threads while the interpreter runs
     (edge.pipeline.decode_ahead), as `classify -i FOLDER` does;
   - the same without confirmation (the fast answer for every photo).
3. Top-1 agreement of classify (with confirmation), and of the draft decode alone, with
   the exact decode on the held-out photos
   (images/holdout/, scripts/collect_holdout.py), made 12 MP the same way, per model: the
   benchmark's model and each --agreement-model (default: the reference EfficientNet-Lite0
   int8, 224x224, when scripts/build_models.py has built it in models/), and what the rule
   would give for other k (edge.classify.CONFIRM_K) from the measured outputs.
   With it, the noise floor: on how many of those photos the exact decode's own top-1 changes
   when as many of its pixel values as the draft decode changes move by one grey level at
   random (seeded, 4 trials each). A decode whose pixels differ that much from the exact ones
   cannot be expected to agree on those photos; agreement is also given on the others.
4. Peak memory (VmHWM) of a fresh process classifying the folder with each method, and the
   machine's load average before and after the run (other processes slow every row).
Targets (issue): edgeport >= 4x pycoral's photos/s on 2 cores, agreement >= 99%, peak memory
no higher than the exact serial decode.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
DEFAULT_MODEL = os.path.join(REPO, "..", "shared", "fixtures", "coral", "mobilenet_v1_0.25_128_quant.tflite")


def camera_copy(src, out):
    """`src` as a 12 MP camera JPEG at `out` (upright content = the photo, upscaled)."""
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        portrait = im.height > im.width
        big = im.resize((3000, 4000) if portrait else (4000, 3000), Image.BICUBIC)
    exif = Image.Exif()
    if portrait:  # stored as the sensor saw it (landscape), shown upright by orientation 6
        big = big.transpose(Image.ROTATE_90)
        exif[0x0112] = 6
    else:
        exif[0x0112] = 1
    big.save(out, quality=90, exif=exif.tobytes())


def make_folder(sources, folder):
    os.makedirs(folder, exist_ok=True)
    out = []
    for s in sources:
        dst = os.path.join(folder, os.path.splitext(os.path.basename(s))[0] + ".jpg")
        if not os.path.exists(dst):
            camera_copy(s, dst)
        out.append(dst)
    return out


def classifier(model):
    from edge.classify import Classifier
    from edge.interpreter import make_interpreter

    interp, info = make_interpreter(model)
    return Classifier(interp), info


def run_method(method, clf, photos, margins=False, confirmed=None):
    """Top-1 class id per photo, classified with `method` (with `margins`: (id, top-1 score
    minus top-2 score) pairs). "draft" and "pipeline" are the library's path
    (edge.classify.classify_images: fast decode, photos whose two resamplings disagree
    confirmed by an exact decode),
    serial and on decode threads; each photo confirmed is appended to the list `confirmed`."""
    from PIL import Image

    from edge.pipeline import decode_ahead
    from edge.preprocess import load_pixels

    size = clf.preprocess.size
    if method in ("draft", "pipeline", "unconfirmed") and not margins:
        from edge.classify import classify_images

        results = classify_images(clf, photos, workers=0 if method == "draft" else None,
                                  confirm=method != "unconfirmed")
        if confirmed is not None:
            confirmed.extend(r.path for r in results if r.decode == "draft, confirmed exact")
        return [r.classes[0].id for r in results]
    if method == "pycoral":
        def load(p):
            return clf.preprocess.array(Image.open(p).convert("RGB").resize(size, Image.LANCZOS))
    elif method == "exact":
        def load(p):
            return clf.preprocess.array(load_pixels(p, size, exact=True))
    else:
        def load(p):
            return clf.preprocess.array(load_pixels(p, size, exact=False))
    workers = None if method == "pipeline" else 0
    out = []
    for _, pixels, error in decode_ahead(photos, load, workers=workers):
        if error is not None:
            raise error
        if margins:
            c = clf.classify(pixels, 2)
            out.append((c[0].id, c[0].score - (c[1].score if len(c) > 1 else 0.0)))
        else:
            out.append(clf.classify(pixels, 1)[0].id)
    return out


def noise_unstable(clf, pixels, exact_ids, fraction=0.005, trials=4, seed=0):
    """Indices of the exact-decode `pixels` (one array per photo) whose top-1 changes when
    `fraction` of the pixel values move by +-1 (seeded): how far a decode may differ before
    top-1 flips by chance."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for i, (px, top1) in enumerate(zip(pixels, exact_ids)):
        a = px.astype(np.int16)
        for _ in range(trials):
            step = (rng.random(a.shape) < fraction) * rng.choice(np.array([-1, 1], np.int16), a.shape)
            b = np.clip(a + step, 0, 255).astype(np.uint8)
            if clf.classify(b, 1)[0].id != top1:
                out.append(i)
                break
    return out


METHODS = (("pycoral", "pycoral example (full decode, LANCZOS)"),
           ("exact", "edgeport --exact-decode, serial"),
           ("draft", "edgeport draft decode + confirm, serial"),
           ("pipeline", "edgeport classify (draft + confirm + threads)"),
           ("unconfirmed", "edgeport classify without confirmation"))


def report_agreement(clf, name, held):
    """Prints the top-1 agreement of edgeport's classify (draft decode, photos whose two
    resamplings disagree confirmed) and of the draft decode alone with the exact decode on
    `held` for one model, what each k of the rule would give, and that model's noise floor
    (each photo decoded once each way)."""
    import numpy as np

    from edge.classify import CONFIRM_K, decode_noise_call
    from edge.preprocess import decode_variants, load_pixels

    size = clf.preprocess.size

    def output(px):
        clf.set_input(clf.preprocess(px))
        clf.invoke()
        return clf.output()

    exact_px = [clf.preprocess.array(load_pixels(p, size, exact=True)) for p in held]
    fast_px, variant_out = [], []
    for p in held:
        first, second = decode_variants(p, size)
        fast_px.append(clf.preprocess.array(first))
        variant_out.append(output(clf.preprocess.array(second)) if second is not None else None)
    exact = []
    for px in exact_px:
        c = clf.classify(px, 2)
        exact.append((c[0].id, c[0].score - (c[1].score if len(c) > 1 else 0.0)))
    fast_out = [output(px) for px in fast_px]
    fast = [int(np.argmax(o)) for o in fast_out]
    confirmed = []
    library = run_method("draft", clf, held, confirmed=confirmed)
    agree_lib = sum(x[0] == y for x, y in zip(exact, library))
    print(f"top-1 agreement, edgeport classify (draft + confirm) vs exact decode, {len(held)} held-out "
          f"photos at 12 MP, {name} ({size[0]}x{size[1]}): {agree_lib}/{len(held)} "
          f"({agree_lib / len(held):.1%}); confirmed by an exact decode (the two resamplings "
          f"disagree, k = {CONFIRM_K:g}): {len(confirmed)}/{len(held)}")
    agree = sum(x[0] == y for x, y in zip(exact, fast))
    print(f"  without confirmation (draft decode alone): {agree}/{len(held)} ({agree / len(held):.1%})")
    fast_leads = []
    for px in fast_px:
        clf.classify(px, 1)
        fast_leads.append(clf.lead())
    missed = sorted(lead for (i, _), y, lead in zip(exact, fast, fast_leads) if i != y)
    if missed:
        unit = "output steps" if clf._quant else "relative to the top-1 score"
        print(f"  where the draft decode alone differs, its own top-1 leads its top-2 by "
              f"{', '.join(f'{g:.3g}' for g in missed)} ({unit})")
    rows = []
    for k in (0, 0.5, 1, 2, 3):
        calls = [v is not None and decode_noise_call(o, v, k) for o, v in zip(fast_out, variant_out)]
        ok = sum(x[0] == y or c for x, y, c in zip(exact, fast, calls))
        rows.append(f"{k:g}: {sum(calls)} confirmed, {ok} agree")
        if k == 0:
            caught = sum(c for (i, _), y, c in zip(exact, fast, calls) if i != y)
            print(f"  the two resamplings' top-1 differ (or tie) on {sum(calls)} photos, "
                  f"{caught} of the {len(held) - agree} where the draft decode alone differs")
    print("  confirming when the lead is within k x its move between the resamplings would give "
          "(from the measured outputs) k = " + "; ".join(rows))
    q = clf._quant[0] if clf._quant else None
    gaps = sorted(m for (i, m), y in zip(exact, fast) if i != y)
    if gaps:
        unit = f" ({', '.join(f'{g / q:.0f}' for g in gaps)} output steps)" if q else ""
        print(f"  where they differ, the exact decode's own top-1 leads its top-2 by "
              f"{', '.join(f'{g:.4f}' for g in gaps)}{unit}")
    moved = float(np.mean([np.mean(a != b) for a, b in zip(exact_px, fast_px)]))
    shaky = set(noise_unstable(clf, exact_px, [i for i, _ in exact], fraction=moved))
    steady = [k for k in range(len(held)) if k not in shaky]
    agree_steady = sum(exact[k][0] == fast[k] for k in steady)
    print(f"  noise floor: the exact decode's own top-1 changes on {len(shaky)}/{len(held)} photos when "
          f"{moved:.1%} of its pixel values (as many as the draft decode changes) move by one grey "
          f"level at random; on the other {len(steady)} the draft "
          f"decode agrees on {agree_steady}/{len(steady)} ({agree_steady / max(1, len(steady)):.1%})")


def agreement_models(a):
    """The benchmark's model, then each --agreement-model (default: the reference
    EfficientNet-Lite0 int8 of models/, scripts/build_models.py, when it is built)."""
    extra = a.agreement_model
    if extra is None:
        ref = os.path.join(REPO, "models", "efficientnet_lite0_int8.tflite")
        extra = [ref] if os.path.exists(ref) else []
    same = os.path.realpath(a.model)
    return [a.model] + [m for m in extra if os.path.realpath(m) != same]


def peak_memory_kb(method, model, folder):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import os\n"
            "from scripts.bench_photos import classifier, run_method\n"
            "clf, _ = classifier(sys.argv[2])\n"
            "photos = sorted(os.path.join(sys.argv[3], n) for n in os.listdir(sys.argv[3]))\n"
            "run_method(sys.argv[4], clf, photos)\n"
            "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n")
    p = subprocess.run([sys.executable, "-c", code, REPO, model, folder, method],
                       capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if p.returncode:
        return None
    return int(p.stdout.split()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--photos", type=int, default=20, help="12 MP photos made from images/ (default 20)")
    ap.add_argument("--holdout", type=int, default=127, help="held-out photos for agreement (default 127)")
    ap.add_argument("--agreement-model", action="append", metavar="M.tflite",
                    help="also measure agreement with this model (repeatable; default: "
                         "models/efficientnet_lite0_int8.tflite when built)")
    ap.add_argument("--chunk", type=int, default=5, help="photos per interleaved round (default 5)")
    ap.add_argument("--out", help="keep the generated photos here (default: a temporary folder)")
    ap.add_argument("--label", default="", help="a label printed with the figures (e.g. emulated)")
    ap.add_argument("--prepare-only", action="store_true",
                    help="only make the 12 MP photos in --out (needs Pillow only), then stop")
    a = ap.parse_args(argv)

    import platform

    from edge.pipeline import default_workers

    tmp = a.out or tempfile.mkdtemp(prefix="edgeport-bench-photos.")
    images = sorted(os.path.join(REPO, "images", n) for n in os.listdir(os.path.join(REPO, "images"))
                    if n.endswith(".jpg"))[: a.photos]
    hold = sorted(os.path.join(REPO, "images", "holdout", n)
                  for n in os.listdir(os.path.join(REPO, "images", "holdout")) if n.endswith(".jpg"))[: a.holdout]
    t0 = time.perf_counter()
    photos = make_folder(images, os.path.join(tmp, "camera"))
    held = make_folder(hold, os.path.join(tmp, "holdout"))
    made = time.perf_counter() - t0
    if a.prepare_only:
        print(f"{len(photos) + len(held)} photos made in {tmp} ({made:.0f} s)")
        return 0

    load0 = os.getloadavg()
    clf, info = classifier(a.model)
    label = f" [{a.label}]" if a.label else ""
    print(f"bench_photos{label}: {platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, "
          f"Python {platform.python_version()}, {info.get('runtime')} on {info.get('device')}, "
          f"model {os.path.basename(a.model)} ({clf.preprocess.size[0]}x{clf.preprocess.size[1]}), "
          f"{default_workers()} decode threads")
    print(f"{len(photos)} photos 4000x3000 JPEG q90 (made in {made:.0f} s from images/)")
    run_method("draft", clf, photos[:2])  # warm up the interpreter and Pillow
    # Interleaved: the folder in chunks, every method on each chunk in turn (order rotating),
    # so that load from other processes on a shared machine hits all methods alike.
    spent = {m: 0.0 for m, _ in METHODS}
    confirmed = []
    chunks = [photos[i:i + a.chunk] for i in range(0, len(photos), a.chunk)]
    for r, chunk in enumerate(chunks):
        order = METHODS[r % len(METHODS):] + METHODS[:r % len(METHODS)]
        for method, _ in order:
            t = time.perf_counter()
            run_method(method, clf, chunk, confirmed=confirmed if method == "pipeline" else None)
            spent[method] += time.perf_counter() - t
    rates = {m: len(photos) / spent[m] for m in spent}
    print(f"{'method':48s} {'photos/s':>9s} {'ms/photo':>9s} {'vs pycoral':>10s}")
    for method, desc in METHODS:
        print(f"{desc:48s} {rates[method]:9.2f} {1000 * spent[method] / len(photos):9.0f} "
              f"{rates[method] / rates['pycoral']:9.2f}x")
    print(f"(edgeport rows: {len(confirmed)}/{len(photos)} photos confirmed by an exact decode)")

    for m in agreement_models(a):
        report_agreement(clf if m == a.model else classifier(m)[0], os.path.basename(m), held)

    if os.path.exists("/proc/self/status"):
        folder = os.path.join(tmp, "camera")
        for m in agreement_models(a):
            mem = {method: peak_memory_kb(method, m, folder) for method, _ in METHODS}
            print(f"peak memory (VmHWM of a fresh process classifying the folder), {os.path.basename(m)}: "
                  + ", ".join(f"{k} {v / 1024:.0f} MB" if v else f"{k} ?" for k, v in mem.items()))
    print("load average (1, 5, 15 min): at the start " + ", ".join(f"{x:.1f}" for x in load0)
          + "; at the end " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    if not a.out:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
