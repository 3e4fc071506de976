"""Three figures of the edge runtime's overhead, measured in one run on this machine.

    python scripts/bench_overhead.py [--model M.tflite] [--image PHOTO] [--runs N]

1. classify's per-image time (image already decoded) / a bare interpreter.invoke() loop on
   the same model and interpreter (target <= 1.02). Blocks of the two loops are interleaved
   and medians compared, so machine noise hits both alike. Shown twice: with the decoded
   image already at the model's input size (the target), and with a full-size photo that
   classify must also resize (for information: resizing is work the model cannot skip).
2. `classify --help` cold start: median wall time of 5 fresh processes (target <= 0.3 s).
3. Whether `import edge` loaded tensorflow, torch, onnx or coremltools (target: none).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CANDIDATES = [
    os.path.join(REPO, "models", "efficientnet_lite0_int8.tflite"),
    os.path.join(REPO, "..", "shared", "fixtures", "coral", "mobilenet_v1_0.25_128_quant.tflite"),
    os.path.join(REPO, "tests", "data", "color_uint8.tflite"),
]


def interleaved(a, b, runs, block=20):
    ta, tb = [], []
    for _ in range(max(1, runs // block)):
        for fn, out in ((a, ta), (b, tb)):
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def classify_ratio(model, image, runs):
    sys.path.insert(0, REPO)
    from edge.classify import Classifier, preprocessing_of
    from edge.interpreter import make_interpreter
    from edge.preprocess import load_image

    interpreter, info = make_interpreter(model)
    mean, std, layout = preprocessing_of(model)  # what `classify` uses: the sidecar, else 128/128
    clf = Classifier(interpreter, mean, std, layout)
    photo = load_image(image, clf.preprocess.spec.channels)
    at_size = clf.preprocess.array(photo)  # decoded, already at the model's size
    clf.classify(at_size)
    for _ in range(10):
        interpreter.invoke()
    bare, full = interleaved(interpreter.invoke, lambda: clf.classify(at_size), runs)
    _, resized = interleaved(interpreter.invoke, lambda: clf.classify(clf.preprocess.array(photo)), runs // 2)
    return info, bare, full, resized


def help_cold_start():
    exe = shutil.which("classify", path=os.path.dirname(sys.executable)) or shutil.which("classify")
    cmd = [exe, "--help"] if exe else [sys.executable, "-c", "from edgeport.cli import classify_main; classify_main(['--help'])"]
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), " ".join(os.path.basename(c) for c in cmd[:2])


def heavy_imports():
    code = ("import sys, edge, edge.classify, edge.interpreter, edge.preprocess, edge.bench\n"
            "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'tensorflow','torch','onnx','coremltools','keras','tf2onnx'})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=next((c for c in CANDIDATES if os.path.exists(c)), None))
    ap.add_argument("--image", default=os.path.join(REPO, "images", "chelsea.jpg"))
    ap.add_argument("--runs", type=int, default=400)
    args = ap.parse_args()

    info, bare, full, resized = classify_ratio(args.model, args.image, args.runs)
    ratio = full / bare
    print(f"model: {os.path.relpath(args.model, REPO)} ({info['runtime']}, {info['device']})")
    print(f"1. classify per image / bare invoke: {ratio:.3f}  (classify {full * 1e3:.3f} ms, "
          f"invoke {bare * 1e3:.3f} ms; target <= 1.02: {'PASS' if ratio <= 1.02 else 'MISS'})")
    print(f"   with a full-size photo to resize too: {resized / bare:.3f}  ({resized * 1e3:.3f} ms; "
          "for information)")
    cold, what = help_cold_start()
    print(f"2. `{what}` cold start: {cold:.3f} s  (median of 5; target <= 0.3 s: "
          f"{'PASS' if cold <= 0.3 else 'MISS'})")
    heavy = heavy_imports()
    print(f"3. `import edge` loaded: {', '.join(heavy) if heavy else 'none of tensorflow, torch, onnx, coremltools'}"
          f"  (target none: {'PASS' if not heavy else 'MISS'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
