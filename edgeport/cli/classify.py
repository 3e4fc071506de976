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

def run(args):  # noqa: C901 (a named exception: to be split along its jobs)
    import sys

    from edge.classify import Classifier, preprocessing_of
    from edge.errors import InputError
    from edge.interpreter import make_interpreter, split_model_device
    from edge.labels import check_labels, read_labels
    from edge.preprocess import list_images
    from edgeport.cli.args import preprocessing
    from edgeport.cli.output import emit_json

    model_path, _ = split_model_device(args.model)
    pre = preprocessing(args)
    mean, std, layout = preprocessing_of(model_path, pre.get("mean"), pre.get("std"), pre.get("layout"))
    images = list_images(args.input)

    interpreter, info = make_interpreter(args.model, device=args.device, runtime=args.runtime,
                                         num_threads=args.threads)
    if args.input_shapes:
        from converters.validation.signature import parse_input_shapes
        from edge.files import printable

        shapes = parse_input_shapes(args.input_shapes)
        d = interpreter.get_input_details()[0]
        shape = shapes.get(None) or shapes.get(d["name"])
        if shape is None:
            raise InputError(f"--input-shapes names no input of the model (its input: {printable(d['name'])})")
        if len(shapes) > 1:
            raise InputError(f"--input-shapes gives {len(shapes)} shapes; the model has one input")
        interpreter.resize_tensor_input(d["index"], list(shape))
        try:
            interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            from edge.errors import first_line

            raise InputError(f"the model does not take input shape {list(shape)}: {first_line(e)}") from None
    classifier = Classifier(interpreter, mean, std, layout=layout)
    labels = read_labels(args.labels) if args.labels else {}
    warning = check_labels(labels, classifier.num_classes)
    if labels and max(labels) + 1 not in (classifier.num_classes, classifier.num_classes - 1):
        # Not the usual background-class offset: every name printed would be wrong.
        raise InputError(f"{args.labels}: {warning}",
                         "pass the labels file made for this model, or leave out -l to print class ids")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    from edge.classify import class_vector_warning  # realworld: detectors, segmenters, ...

    no_classes = class_vector_warning(interpreter)
    if no_classes:
        print(f"warning: {no_classes}", file=sys.stderr)

    from edge.pipeline import decode_ahead

    results = []
    # Photos decode on worker threads while the interpreter runs (bounded, in input order).
    for path, pixels, error in decode_ahead(images, classifier.preprocess.load):
        if error is not None:
            if not isinstance(error, InputError) or path not in getattr(images, "from_folder", ()):
                raise error
            print(f"warning: skipped {error}", file=sys.stderr)  # one unreadable image of a folder
            continue
        tensor = classifier.preprocess(pixels)
        classifier.set_input(tensor)
        times = [classifier.invoke() * 1000.0 for _ in range(args.count)]
        classes = classifier.classes(args.top_k, args.threshold)
        results.append((path, times, classes))

    if not results:
        raise InputError("no image could be read", "see the warnings above")
    if args.json:
        return emit_json("classify", 0, model=info["model"],
                         **{k: v for k, v in info.items() if k != "model"}, preprocessing=classifier.preprocess.describe(), results=[
            {"image": p, "inference_ms": [round(t, 3) for t in ts],
             "classes": [{"id": c.id, "label": labels.get(c.id, str(c.id)), "score": round(c.score, 5)}
                         for c in cs]} for p, ts, cs in results])
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
