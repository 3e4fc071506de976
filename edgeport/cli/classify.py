"""`classify`: image classification on an Edge TPU or the CPU, with pycoral's flags and output."""

HELP = "classify images with a TFLite model (Edge TPU or CPU)"
DESCRIPTION = """Classify images with a TFLite model, on a Coral Edge TPU when the model is compiled
for it and one is attached, else on the CPU. Flags and output follow pycoral's
classify_image.py; mean/std default to the model's sidecar (NAME.edgeport.json) or 128/128.

example:
  classify -m mobilenet_v1_0.25_128_quant.tflite -l imagenet_labels.txt -i bird.bmp -k 3"""


def configure(p):
    from edgeport.cli.args import (
        add_device,
        add_json,
        add_preprocessing,
        add_threads,
        count_int,
        finite_float,
        top_k_int,
    )

    p.add_argument("-m", "--model", required=True, help="a .tflite model (MODEL@usb:0 picks a device)")
    p.add_argument("-i", "--input", required=True, nargs="+", metavar="IMAGE",
                   help="image files or folders of images")
    p.add_argument("-l", "--labels", help="labels file: one a line, or 'id label' lines")
    p.add_argument("-k", "--top_k", "--top-k", type=top_k_int, default=1, help="max results (default 1)")
    p.add_argument("-t", "--threshold", type=finite_float, default=0.0,
                   help="score threshold: results score above it (any finite number: scores are the "
                        "model's dequantized outputs, logits for many models; default 0)")
    p.add_argument("-c", "--count", type=count_int, default=5, help="inferences per image (default 5)")
    add_preprocessing(p, size=False, pycoral_flags=True)
    add_device(p)
    add_threads(p)
    add_json(p)
    from edgeport.cli.inputs import add_input_shapes  # open image dimensions, e.g. [1,224,224,3]

    add_input_shapes(p)


def files(args, run):
    """Reads the model (and sidecar), the labels and the images; writes nothing."""
    from edge.interpreter import split_model_device

    run.input(split_model_device(args.model)[0], "model", sidecar=True)
    run.input(args.labels, "labels file")
    run.inputs_of(args.input, "image")

def run(args):
    import sys

    from edge.classify import (
        class_vector_warning,
        classify_images,
        fitting_labels,
        open_classifier,
        preprocessing_of,
    )
    from edge.interpreter import split_model_device
    from edge.preprocess import list_images
    from edgeport.cli.args import preprocessing

    def warn(message):
        print(f"warning: {message}", file=sys.stderr)

    pre = preprocessing(args)
    mean, std, layout = preprocessing_of(split_model_device(args.model)[0], pre.get("mean"),
                                         pre.get("std"), pre.get("layout"))
    images = list_images(args.input)
    shapes = None
    if args.input_shapes:
        from converters.validation.signature import parse_input_shapes

        shapes = parse_input_shapes(args.input_shapes)
    classifier, info = open_classifier(args.model, mean, std, layout,
                                       device=args.device, runtime=args.runtime,
                                       num_threads=args.threads, input_shapes=shapes)
    labels = fitting_labels(args.labels, classifier.num_classes, warn)
    no_classes = class_vector_warning(classifier.interpreter)  # realworld: detectors, segmenters, ...
    if no_classes:
        warn(no_classes)
    results = classify_images(classifier, images, args.count, args.top_k, args.threshold, on_skip=warn)
    if args.json:
        return _emit_json(info, classifier, labels, results)
    for r in results:
        if len(results) > 1:
            print(f"==> {r.path} <==")
        print("----INFERENCE TIME----")
        print("Note: The first inference on Edge TPU is slow because it includes",
              "loading the model into Edge TPU memory.")
        for t in r.times_ms:
            print("%.1fms" % t)
        print("-------RESULTS--------")
        for c in r.classes:
            print("%s: %.5f" % (labels.get(c.id, c.id), c.score))
    return 0


def _emit_json(info, classifier, labels, results):
    from edgeport.cli.output import emit_json

    return emit_json("classify", 0, model=info["model"],
                     **{k: v for k, v in info.items() if k != "model"},
                     preprocessing=classifier.preprocess.describe(), results=[
        {"image": r.path, "decode": r.decode, "inference_ms": [round(t, 3) for t in r.times_ms],
         "classes": [{"id": c.id, "label": labels.get(c.id, str(c.id)), "score": round(c.score, 5)}
                     for c in r.classes]} for r in results])
