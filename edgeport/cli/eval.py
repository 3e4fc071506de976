"""`eval`: top-1 / top-k accuracy of several models on a folder of labelled images."""

HELP = "top-1/top-k accuracy of models on images in one folder per class"


DESCRIPTION = """Measure the accuracy of one or more classifiers (e.g. float vs int8 vs Edge TPU) on
DIR, which holds one folder per class. Folder names are matched to the labels (from
--labels or the models' sidecars) ignoring case, underscores, hyphens and spaces, and any
comma-separated synonym on a label line ("tench, Tinca tinca"). Each image reaches every
model through that model's own preprocessing spec.

exit status: 0 done, 1 a model failed to run, 2 a usage or load error.

example:
  edgeport eval model.keras model_int8.tflite model_edgetpu.tflite --images val/ -k 5"""


def configure(p):
    from edgeport.cli.args import (
        add_device,
        add_input_shape,
        add_json,
        add_model_loading,
        add_preprocessing,
        limit_int,
        top_k_int,
    )
    from edgeport.cli.inputs import add_input_args

    p.add_argument("models", nargs="+", help="classifier models")
    p.add_argument("--images", required=True, metavar="DIR", help="one sub-folder of images per class")
    p.add_argument("--labels", help="labels file (default: the models' sidecar labels)")
    p.add_argument("-k", "--top-k", type=top_k_int, default=5, help="K for top-k accuracy (default 5)")
    p.add_argument("--limit", type=limit_int, help="at most this many images per class")
    add_preprocessing(p)
    add_device(p)
    add_model_loading(p)
    add_input_shape(p, "input shape for PyTorch models, e.g. 1 3 224 224")
    add_input_args(p)
    add_json(p, "print one JSON object instead of the table")


def files(args, run):
    """Reads the models (and sidecars), the labels, the image folder and --data; writes nothing."""
    from edgeport.cli.inputs import declare_inputs

    run.inputs_of(args.models, "model", sidecar=True)
    run.input(args.labels, "labels file")
    run.input(args.images, "--images folder")
    declare_inputs(args, run)

def run(args):
    import converters.validation.evaluate as _lib
    from converters.artefact import open_model
    from edge.errors import InputError
    from edge.labels import read_labels
    from edgeport.cli.args import model_loading, preprocessing
    from edgeport.cli.output import emit_json

    pre = preprocessing(args)
    if args.labels:
        labels = read_labels(args.labels)
    else:
        found = next((a.labels for a in (open_model(m, args.torch_model) for m in args.models) if a.labels), None)
        if not found:
            raise InputError("no labels: the models' sidecars have none", "pass --labels FILE")
        labels = dict(enumerate(found)) if isinstance(found, list) else {int(k): v for k, v in found.items()}
    loading = model_loading(args)
    folders, items = _lib.dataset(args.images, args.limit)
    classes = _lib.match_classes(folders, labels)
    rows = []
    for m in args.models:
        t1, tk, n, ms = _lib.evaluate(m, items, classes, args.top_k, preprocessing=pre, device=args.device,
                                      runtime=args.runtime, loading=loading)
        rows.append({"model": m, "images": n, "top1": t1 / n, "topk": tk / n,
                     "top1_hits": t1, "topk_hits": tk, "mean_ms": round(ms, 3) if ms else None})
    if args.json:
        return emit_json("eval", 0, images=len(items), classes=len(folders), k=args.top_k, models=rows)
    print(f"{len(items)} images in {len(folders)} classes")
    width = max(len("model"), *(len(r["model"]) for r in rows))
    print(f"{'model'.ljust(width)}  top-1    top-{args.top_k}    ms/image")
    for r in rows:
        print(f"{r['model'].ljust(width)}  {r['top1']:6.1%}  {r['topk']:6.1%}  "
              f"{r['mean_ms'] if r['mean_ms'] is not None else '-'}")
    return 0
