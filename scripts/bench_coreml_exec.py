"""How fast the Core ML reference executor runs an ML program (EfficientNet-Lite0 by default).

    python scripts/bench_coreml_exec.py [MODEL.mlpackage] [--images images] [--count 10]

Prints the load time, then per image the wall-clock and CPU time of one inference (the
photos of --images, resized to the model's image input), their medians, and the ratio to
PyTorch on the same photos when the model is the reference EfficientNet-Lite0. CPU time is
the figure to compare across runs: on a shared machine wall-clock time also counts waiting
for a core (the load average is printed for that reason).
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def photos(folder, size, count):
    from PIL import Image

    from edge.preprocess import list_images

    files = list_images([folder])[:count]
    if not files:
        raise SystemExit(f"no photos in {folder}")
    w, h = size
    for f in files:
        with Image.open(f) as im:
            arr = np.asarray(im.convert("RGB").resize((w, h), Image.BILINEAR), np.float32)
        yield os.path.basename(f), arr.transpose(2, 0, 1)[None]


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=os.path.join(REPO, "models", "efficientnet_lite0.mlpackage"))
    ap.add_argument("--images", default=os.path.join(REPO, "images"))
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    args = ap.parse_args(argv)
    if not os.path.exists(args.model):
        raise SystemExit(f"{args.model} not found: build it with scripts/build_models.py")

    import coremltools  # noqa: F401  (imported first so the load time below is the model's)

    from converters.validation.mil.executor import MLProgramExecutor

    ex, load_wall, load_cpu = timed(lambda: MLProgramExecutor.load(args.model))
    name, desc = next(iter(ex.description.items()))
    if desc.type.WhichOneof("Type") != "imageType":
        raise SystemExit("this benchmark feeds photos: the model's first input is not an image")
    size = (int(desc.type.imageType.width), int(desc.type.imageType.height))
    ops = sum(n for t, n in ex.op_counts.items() if t != "const")
    print(f"model: {os.path.basename(args.model.rstrip('/'))}: {ops} ops "
          f"({'float16' if ex.computes_in_fp16 else 'float32'}), {len(ex.constants)} constants")
    print(f"load: {load_wall:.2f} s wall, {load_cpu:.2f} s CPU")
    print(f"load average: {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    feeds = list(photos(args.images, size, args.count))
    ex.run({name: feeds[0][1]})   # warm-up
    walls, cpus, tops = [], [], []
    for fname, x in feeds:
        out, w, c = timed(lambda: ex.run({name: x}))  # noqa: B023 (called at once, inside the loop)
        walls.append(w)
        cpus.append(c)
        tops.append(int(np.argmax(next(iter(out.values())))))
        print(f"  {fname:28} {1000 * w:8.1f} ms wall {1000 * c:8.1f} ms CPU  top-1 {tops[-1]}")
    mw, mc = statistics.median(walls), statistics.median(cpus)
    print(f"executor: median {1000 * mw:.1f} ms wall, {1000 * mc:.1f} ms CPU per image "
          f"({len(feeds)} images)")
    if args.no_torch or "efficientnet_lite0" not in os.path.basename(args.model):
        return 0
    import torch

    from converters.reference_models import EFFICIENTNET_LITE0_PREPROCESSING, efficientnet_lite0

    spec = EFFICIENTNET_LITE0_PREPROCESSING
    mean = np.asarray(spec["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec["std"], np.float32).reshape(1, -1, 1, 1)
    model = efficientnet_lite0().eval()
    twalls, tcpus, same = [], [], 0
    with torch.no_grad():
        for (_fname, x), top in zip(feeds, tops):
            out, w, c = timed(lambda: model(torch.from_numpy((x - mean) / std)))  # noqa: B023 (called at once, inside the loop)
            twalls.append(w)
            tcpus.append(c)
            same += int(out.argmax()) == top
    tw, tc = statistics.median(twalls), statistics.median(tcpus)
    print(f"pytorch:  median {1000 * tw:.1f} ms wall, {1000 * tc:.1f} ms CPU per image; "
          f"top-1 identical on {same}/{len(feeds)}")
    print(f"ratio executor / pytorch: {mw / tw:.2f} wall, {mc / tc:.2f} CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
