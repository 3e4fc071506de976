"""`classify`: image classification on an Edge TPU or the CPU, with pycoral's flags and output."""

HELP = "classify images with a TFLite model (Edge TPU or CPU)"
DESCRIPTION = """Classify images with a TFLite model, on a Coral Edge TPU when the model is compiled
for it and one is attached, else on the CPU. Flags and output follow pycoral's
classify_image.py; mean/std default to the model's sidecar (NAME.edgeport.json) or 128/128.

example:
  classify -m mobilenet_v1_0.25_128_quant.tflite -l imagenet_labels.txt -i bird.bmp -k 3"""


def configure(p):
    p.add_argument("-m", "--model", required=True, help="a .tflite model (MODEL@usb:0 picks a device)")
    p.add_argument("-i", "--input", required=True, nargs="+", metavar="IMAGE",
                   help="image files or folders of images")
    p.add_argument("-l", "--labels", help="labels file: one a line, or 'id label' lines")
    p.add_argument("-k", "--top_k", "--top-k", type=int, default=1, help="max results (default 1)")
    p.add_argument("-t", "--threshold", type=float, default=0.0, help="score threshold (default 0)")
    p.add_argument("-c", "--count", type=int, default=5, help="inferences per image (default 5)")
    p.add_argument("-a", "--input_mean", "--mean", type=float, nargs="+", default=None,
                   help="mean, 0..255 units (default: sidecar, else 128)")
    p.add_argument("-s", "--input_std", "--std", type=float, nargs="+", default=None,
                   help="std, 0..255 units (default: sidecar, else 128)")
    p.add_argument("--layout", choices=["NHWC", "NCHW"], help="override the guessed input layout")
    p.add_argument("--device", default="auto", help="auto, cpu, usb, usb:N, pci, pci:N or :N")
    p.add_argument("--runtime", choices=["ai_edge_litert", "tflite_runtime", "tensorflow"],
                   help="force one TFLite backend (default: the first installed)")
    p.add_argument("--threads", type=int, help="CPU threads for the interpreter")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args):
    import json
    import sys

    from edge.classify import Classifier, preprocessing_of
    from edge.errors import InputError
    from edge.interpreter import make_interpreter, split_model_device
    from edge.labels import check_labels, read_labels
    from edge.preprocess import list_images

    if args.count < 1:
        raise InputError("--count must be at least 1")
    if args.top_k < 1:
        raise InputError("--top_k must be at least 1")
    model_path, _ = split_model_device(args.model)
    mean, std, layout = preprocessing_of(model_path, args.input_mean, args.input_std, args.layout)
    images = list_images(args.input)

    interpreter, info = make_interpreter(args.model, device=args.device, runtime=args.runtime,
                                         num_threads=args.threads)
    classifier = Classifier(interpreter, mean, std, layout=layout)
    labels = read_labels(args.labels) if args.labels else {}
    warning = check_labels(labels, classifier.num_classes)
    if labels and max(labels) + 1 not in (classifier.num_classes, classifier.num_classes - 1):
        # Not the usual background-class offset: every name printed would be wrong.
        raise InputError(f"{args.labels}: {warning}",
                         "pass the labels file made for this model, or leave out -l to print class ids")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)

    results = []
    for path in images:
        try:
            pixels = classifier.preprocess.load(path)
        except InputError as e:  # one unreadable image of a folder: say so, go on with the rest
            if path not in getattr(images, "from_folder", ()):
                raise
            print(f"warning: skipped {e}", file=sys.stderr)
            continue
        tensor = classifier.preprocess(pixels)
        classifier.set_input(tensor)
        times = [classifier.invoke() * 1000.0 for _ in range(args.count)]
        classes = classifier.classes(args.top_k, args.threshold)
        results.append((path, times, classes))

    if not results:
        raise InputError("no image could be read", "see the warnings above")
    if args.json:
        out = dict(info, preprocessing=classifier.preprocess.describe(), results=[
            {"image": p, "inference_ms": [round(t, 3) for t in ts],
             "classes": [{"id": c.id, "label": labels.get(c.id, str(c.id)), "score": round(c.score, 5)}
                         for c in cs]} for p, ts, cs in results])
        print(json.dumps(out, indent=2))
        return 0
    for path, times, classes in results:
        if len(results) > 1:
            print(f"==> {path} <==")
        print("----INFERENCE TIME----")
        print("Note: The first inference on Edge TPU is slow because it includes",
              "loading the model into Edge TPU memory.")
        for t in times:
            print("%.1fms" % t)
        print("-------RESULTS--------")
        for c in classes:
            print("%s: %.5f" % (labels.get(c.id, c.id), c.score))
    return 0
