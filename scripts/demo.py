"""The main job on bundled defaults (the README's first command runs it).

1. Build the reference models (scripts/build_models.py): EfficientNet-Lite0 from PyTorch
   into ONNX, ORT, Core ML, TFLite float, TFLite int8 (and Edge TPU when a compiler runs here).
   Each artefact is validated against PyTorch on images/ and on the held-out images/holdout/.
2. Classify every photo in images/ with each artefact in its own runtime (PyTorch, ONNX
   Runtime, the edge TFLite interpreter; Core ML on macOS, elsewhere the Core ML reference
   executor) and print the top-1 label of
   each, the mean latency, and the top-1 agreement of every format with PyTorch.
3. Run `classify` (the device command) on the int8 model for one photo, as a user would.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "scripts"))

import build_models  # noqa: E402

SHORT = {"torch-module": "pytorch", "onnx": "onnx", "ort": "ort", "coreml": "coreml", "tflite": "tflite",
         "tflite-int8": "int8", "edgetpu": "edgetpu"}


def top1_table(npz_path, labels, images):
    """Per image, the top-1 label of every model whose outputs were saved."""
    with np.load(npz_path, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
        outs = {m["format"]: z[f"{m['key']}_o0"] for m in meta["models"]}
    formats = list(outs)
    top = {f: outs[f].reshape(outs[f].shape[0], -1).argmax(axis=1) for f in formats}
    width = 22
    print("\n" + f"{'photo':24}" + "".join(f"{SHORT.get(f, f):{width}}" for f in formats))
    for i, path in enumerate(images[: len(top[formats[0]])]):
        ref = top[formats[0]][i]
        cells = []
        for f in formats:
            name = labels.get(int(top[f][i]), str(top[f][i])).split(",")[0][: width - 3]
            cells.append(f"{name + ('' if top[f][i] == ref else ' *'):{width}}")
        print(f"{os.path.basename(path)[:23]:24}" + "".join(cells))
    print("(* = differs from PyTorch)")


def summary_table(manifest, report):
    print(f"\n{'artefact':34} {'runtime':22} {'mean ms':>8}  top-1 agreement with PyTorch")
    src = report.source
    print(f"{'efficientnet_lite0.pth (PyTorch)':34} {src.get('runtime', 'torch')[:22]:22} "
          f"{src.get('mean_ms') or 0:8.2f}  (reference)")
    for r in report.results:
        runtime = (r.runner or {}).get("runtime", "-")
        ms = f"{r.mean_ms:8.2f}" if r.mean_ms else f"{'-':>8}"
        print(f"{r.name:34} {str(runtime)[:22]:22} {ms}  {r.summary_line()}")


def main():
    from edge.labels import read_labels
    from edge.preprocess import list_images

    args = build_models.parser().parse_args(sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, "outputs.npz")
        manifest, report = build_models.build(args, save_outputs=npz)
        build_models.print_manifest(manifest)
        summary_table(manifest, report)
        labels = read_labels(args.labels)
        top1_table(npz, labels, list_images([args.images]))

    int8 = os.path.join(args.out, "efficientnet_lite0_int8.tflite")
    photo = os.path.join(args.images, "chelsea.jpg")
    cmd = [os.path.join(os.path.dirname(sys.executable), "classify"), "-m", int8, "-l", args.labels,
           "-i", photo, "-k", "3"]
    print(f"\n$ classify -m {os.path.relpath(int8, REPO)} -l {os.path.relpath(args.labels, REPO)} "
          f"-i {os.path.relpath(photo, REPO)} -k 3")
    sys.stdout.flush()
    code = subprocess.call(cmd, stderr=subprocess.DEVNULL)
    return 1 if code or not manifest["passed"] else 0


if __name__ == "__main__":
    from edge.console import quiet

    status = [1]
    with quiet(failed=lambda: status[0] == 1):   # the frameworks' chatter hidden, as in the CLI
        status[0] = main()
    sys.exit(status[0])
