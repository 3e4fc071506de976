"""`convert`: one command, many targets; prints the route and one line per artefact."""

HELP = "convert a model to ONNX, ORT, Core ML, TFLite float/int8 or Edge TPU"
DESCRIPTION = """Convert a model (TFLite, ONNX, SavedModel, Keras, TorchScript, .pt2, or a PyTorch
state dict with --torch-model) to one or more formats. The route is planned over the
registered conversions; each artefact is written atomically beside the source (or in -o),
stamped with provenance (in the model and in NAME.edgeport.json) and validated against the
model it was made from. Full-int8 TFLite needs --calibration DIR (real images).

examples:
  convert net.keras --to onnx,ort,tflite
  convert net.keras --to tflite-int8 --calibration images/ --size 224 224 --mean 127.5 --std 127.5
  convert models/ --to onnx --jobs 2 -o out/
  convert models/ --to onnx,tflite --shard 2/8 -o out/   (runner 2 of 8; see `manifest merge`)"""


def configure(p):
    p.add_argument("source", metavar="SRC", help="a model file or folder, or a folder of models")
    p.add_argument("--to", required=True, metavar="FMT[,FMT...]",
                   help="targets: onnx, ort, coreml, tflite, tflite-int8, edgetpu")
    p.add_argument("-o", "--output-dir", metavar="OUTDIR", help="where to write (default: beside the source)")
    p.add_argument("--force", action="store_true", help="convert again even when an output exists")
    p.add_argument("--quiet", action="store_true", help="no progress, only the result lines")
    p.add_argument("--json", action="store_true", help="print one JSON object (implies --quiet)")
    p.add_argument("--jobs", type=int, default=1, help="folder mode: models converted in parallel")
    p.add_argument("--no-validate", action="store_true", help="do not check artefacts against their source")
    p.add_argument("--shard", metavar="K/N",
                   help="folder mode: convert only shard K of N (K from 1; by model content hash) "
                        "and write OUTDIR/edgeport-manifest.shard-K-of-N.json")
    g = p.add_argument_group("model")
    g.add_argument("--opset", type=int, help="ONNX opset (default 17)")
    g.add_argument("--input-shape", type=int, nargs="+", metavar="N", help="e.g. 1 224 224 3")
    g.add_argument("--dynamic-batch", action="store_true", help="leave the batch dimension free")
    g.add_argument("--torch-model", metavar="MODULE:FACTORY",
                   help="PyTorch: a callable returning the nn.Module; SRC is its state dict")
    g.add_argument("--trust-pickle", action="store_true", help="allow full pickles / TorchScript")
    g.add_argument("--keras-unsafe", action="store_true", help="allow Keras Lambda layers (runs code)")
    g = p.add_argument_group("preprocessing (pixels 0..255, input = (pixel - mean) / std)")
    g.add_argument("--size", type=int, nargs="+", metavar="N", help="H W (or one number for square)")
    g.add_argument("--mean", type=float, nargs="+", help="one value or one per channel")
    g.add_argument("--std", type=float, nargs="+", help="one value or one per channel")
    g.add_argument("--layout", choices=["NHWC", "NCHW"], help="image layout of the model's input")
    g.add_argument("--labels", metavar="FILE", help="labels file (Core ML classifier, sidecar)")
    g = p.add_argument_group("full-int8 TFLite")
    g.add_argument("--calibration", metavar="DIR", help="folder of representative images")
    g.add_argument("--calibration-count", type=int, default=100, help="images used (default 100)")
    g.add_argument("--io-dtype", choices=["uint8", "int8"], default="uint8", help="input/output type")
    g = p.add_argument_group("ORT")
    g.add_argument("--ort-optimization", choices=["Fixed", "Runtime"], default="Fixed")
    g.add_argument("--target-platform", choices=["arm", "amd64"])
    g = p.add_argument_group("Core ML")
    g.add_argument("--coreml-target", metavar="TARGET", help="minimum deployment target, e.g. iOS16")
    g.add_argument("--author")
    g.add_argument("--license")
    g.add_argument("--description")
    g.add_argument("--model-version")
    g = p.add_argument_group("Edge TPU")
    g.add_argument("--compiler", choices=["auto", "local", "docker", "podman"], default="auto")
    g.add_argument("--min-runtime-version", type=int)
    g.add_argument("--num-segments", type=int)
    g.add_argument("--search-delegate", action="store_true")
    g.add_argument("--timeout", type=float, default=600.0, help="compiler timeout in seconds")


def options_from_args(args):
    from edge.errors import InputError

    from converters.options import ConvertOptions

    pre = {}
    if args.size:
        if len(args.size) not in (1, 2) or min(args.size) < 1:
            raise InputError("--size takes H W (or one number)")
        pre["size"] = args.size * 2 if len(args.size) == 1 else list(args.size)
    if args.mean:
        pre["mean"] = list(args.mean)
    if args.std:
        if any(s == 0 for s in args.std):
            raise InputError("--std must not be 0")
        pre["std"] = list(args.std)
    if args.layout:
        pre["layout"] = args.layout
    if args.jobs < 1:
        raise InputError("--jobs must be at least 1")
    if args.calibration_count < 1:
        raise InputError("--calibration-count must be at least 1")
    return ConvertOptions(
        torch_model=args.torch_model, trust_pickle=args.trust_pickle,
        input_shape=tuple(args.input_shape) if args.input_shape else None,
        dynamic_batch=args.dynamic_batch, opset=args.opset, preprocessing=pre or None,
        labels=args.labels, calibration=args.calibration, calibration_count=args.calibration_count,
        io_dtype=args.io_dtype, ort_optimization=args.ort_optimization,
        target_platform=args.target_platform, coreml_target=args.coreml_target,
        author=args.author, license=args.license, description=args.description,
        version=args.model_version, compiler=args.compiler,
        min_runtime_version=args.min_runtime_version, num_segments=args.num_segments,
        search_delegate=args.search_delegate, timeout=args.timeout,
        quiet=args.quiet or args.json, keras_unsafe=args.keras_unsafe)


def human_size(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def print_result(r, out):
    if r.get("error"):
        print(f"{r['source']}: FAILED: {r['error']}", file=out)
        return
    if r["status"] == "skipped":
        print(f"{r['source']}: unchanged since the last run, skipped", file=out)
        return
    for target, route in r["routes"].items():
        print(f"route {target}: {' -> '.join(route)}", file=out)
    for a in r["artefacts"]:
        when = f"{a['seconds']:.1f} s" if a["status"] == "converted" else a["status"]
        line = f"  {a['path']}  {a['format']}  {human_size(a['size'])}  {when}"
        v = a.get("validation")
        if v:
            mark = {True: "ok", False: "FAILED", None: "-"}[v.get("passed")]
            line += f"  validation {mark}: {v.get('summary')}"
        print(line, file=out)
        if a["format"] == "edgetpu" and a["status"] == "converted":  # the compiler's op report
            from converters.edgetpu.compile import report_for_artefact

            text = report_for_artefact(a["path"])
            if text:
                print("\n".join("    " + t for t in text.splitlines()), file=out)
    if r.get("validation_failed"):
        print("  validation FAILED: the artefacts are kept, check them before use", file=out)


def run(args):
    import json
    import os
    import sys

    from converters import pipeline

    options = options_from_args(args)
    targets = pipeline.parse_targets(args.to)
    validate = not args.no_validate
    src = args.source
    is_folder = (os.path.isdir(src) and not args.torch_model
                 and not os.path.exists(os.path.join(src, "saved_model.pb"))
                 and not src.rstrip("/").endswith(".mlpackage"))
    shard = None
    if getattr(args, "shard", None):
        from edge.errors import InputError

        from converters.manifest import parse_shard

        shard = parse_shard(args.shard)
        if not is_folder:
            raise InputError("--shard needs a folder of models as SRC")
    if is_folder:
        on_result = None if args.json else (lambda r: print_result(r, sys.stdout))
        manifest = None
        if shard:
            from converters.manifest import convert_shard

            results, manifest = convert_shard(src, targets, options, *shard, args.output_dir, args.force,
                                              validate, args.jobs, on_result=on_result)
        else:
            results = pipeline.convert_folder(src, targets, options, args.output_dir, args.force,
                                              validate, args.jobs, on_result=on_result)
        code = max([r.get("exit_code", 0) for r in results] or [0])
        if args.json:
            extra = {"manifest": manifest} if manifest else {}
            print(json.dumps({"results": results, "exit_code": code} | extra, indent=2, default=str))
        elif manifest:
            print(f"shard {shard[0]}/{shard[1]}: {len(results)} models; manifest: {manifest}")
        return code
    result = pipeline.convert_model(src, targets, options, args.output_dir, args.force, validate)
    d = result.as_dict()
    if args.json:
        print(json.dumps(d | {"exit_code": result.exit_code}, indent=2, default=str))
    else:
        print_result(d, sys.stdout)
    return result.exit_code
