"""`convert`: one command, many targets; prints the route and one line per artefact."""

HELP = "convert a model to ONNX, ORT, Core ML, TFLite float/int8 or Edge TPU"
DESCRIPTION = """Convert a model (TFLite, ONNX, SavedModel, Keras, TorchScript, .pt2, or a PyTorch
state dict with --torch-model) to one or more formats. The route is planned over the
registered conversions; each artefact is written atomically beside the source (or in -o),
stamped with provenance (in the model and in NAME.edgeport.json) and validated against the
model it was made from, with validate's judgement (--atol, --rtol, --output-role and the
roles' thresholds: the same flags give the same verdict in both commands). An artefact
whose validation could not run (no runtime or device here, structure only) is reported
'NOT VALIDATED' and the exit status is 1 unless --accept-unvalidated. Full-int8 TFLite needs calibration samples: --calibration DIR (real
images), or, for a float TFLite (or an ONNX model, through onnx2tf) that takes no image
(audio, sensors, embeddings, several inputs), --data FILE.npz (representative input arrays
keyed by input name, a stack of samples along axis 0); the int8 model is then validated on
those arrays. ONNX -> TFLite runs onnx2tf from its own environment (built on first use; see
`edgeport toolenv`).

examples:
  convert net.keras --to onnx,ort,tflite
  convert net.keras --to tflite-int8 --calibration images/ --size 224 224 --mean 127.5 --std 127.5
  convert models/ --to onnx --jobs 2 -o out/
  convert float.tflite --to edgetpu --calibration images/ --size 224 224 --mean 127 --std 128
  convert float.tflite --to tflite-int8 --data calib.npz   (audio etc.: arrays, not images)
  convert net.onnx --to tflite-int8,coreml --calibration images/ --mean 127 --std 128 --labels labels.txt
  convert models/ --to onnx,tflite --shard 2/8 -o out/   (runner 2 of 8; see `manifest merge`)"""


def configure(p):
    from edgeport.cli.args import (
        add_input_shape,
        add_json,
        add_judgement,
        add_model_loading,
        add_preprocessing,
        count_int,
        jobs_int,
        opset_int,
        segments_int,
        timeout_float,
        version_int,
    )

    p.add_argument("source", metavar="SRC", help="a model file or folder, or a folder of models")
    p.add_argument("--to", required=True, metavar="FMT[,FMT...]",
                   help="targets: onnx, ort, coreml, tflite, tflite-int8, edgetpu")
    p.add_argument("-o", "--output-dir", metavar="OUTDIR", help="where to write (default: beside the source)")
    p.add_argument("--force", action="store_true", help="convert again even when an output exists")
    p.add_argument("--quiet", action="store_true", help="no progress, only the result lines")
    add_json(p, "print one JSON object (implies --quiet)")
    p.add_argument("--jobs", type=jobs_int, default=1,
                   help="folder mode: models converted in parallel (default 1)")
    p.add_argument("--report", metavar="FILE.html",
                   help="write a self-contained HTML report: each artefact, its verdict, size and time, "
                        "its validation per output, and for Edge TPU models the op strip")
    p.add_argument("--no-validate", action="store_true", help="do not check artefacts against their source")
    add_judgement(p)
    p.add_argument("--no-rewrite", action="store_true",
                   help="never rewrite a graph for a tool that refuses part of it (e.g. DENSIFY into "
                        "dense constants); by default a rewrite is applied only where a route needs it, "
                        "and the result is validated against the unrewritten source")
    p.add_argument("--shard", metavar="K/N",
                   help="folder mode: convert only shard K of N (K from 1; by model content hash) "
                        "and write OUTDIR/edgeport-manifest.shard-K-of-N.json")
    g = p.add_argument_group("model")
    g.add_argument("--opset", type=opset_int, help="ONNX opset (default 17)")
    add_input_shape(g, "the model's input shape, e.g. 1 224 224 3 (PyTorch sources, dynamic inputs)")
    g.add_argument("--dynamic-batch", action="store_true", help="leave the batch dimension free")
    add_model_loading(p)
    g = add_preprocessing(p)
    g.add_argument("--labels", metavar="FILE", help="labels file (Core ML classifier, sidecar)")
    g = p.add_argument_group("full-int8 TFLite (calibration: --calibration DIR, or --data FILE.npz "
                             "for a float TFLite or ONNX model without an image input)")
    g.add_argument("--calibration", metavar="DIR", help="folder of representative images")
    g.add_argument("--calibration-count", type=count_int, default=100,
                   help="images (or --data samples) used (default 100)")
    g.add_argument("--io-dtype", choices=["uint8", "int8"], default="uint8", help="input/output type")
    g = p.add_argument_group("ORT")
    g.add_argument("--ort-optimization", choices=["Fixed", "Runtime"], default="Fixed")
    g.add_argument("--target-platform", choices=["arm", "amd64"],
                   help="ORT: bake in the layout optimizations of the CPU the .ort will run on "
                        "(arm: Raspberry Pi, phones; amd64: x86). Without it the .ort is "
                        "platform-neutral, and ORT format cannot add them at load time")
    g = p.add_argument_group("Core ML")
    g.add_argument("--coreml-target", metavar="TARGET", help="minimum deployment target, e.g. iOS16")
    g.add_argument("--coreml-precision", choices=["float16", "float32"],
                   help="compute precision of the ML program (default float16; float32 for models whose "
                        "values overflow float16)")
    g.add_argument("--author")
    g.add_argument("--license")
    g.add_argument("--description")
    g.add_argument("--model-version")
    g = p.add_argument_group("Edge TPU")
    g.add_argument("--compiler", choices=["auto", "local", "docker", "podman"], default="auto")
    g.add_argument("--min-runtime-version", type=version_int, help="the Edge TPU runtime to compile for")
    g.add_argument("--num-segments", type=segments_int, help="pipeline segments")
    g.add_argument("--search-delegate", action="store_true")
    g.add_argument("--timeout", type=timeout_float, default=600.0,
                   help="compiler timeout in seconds (default 600)")
    g.add_argument("--container-runtime", metavar="NAME", help="OCI runtime for docker/podman, e.g. runc "
                   "(default: $EDGEPORT_CONTAINER_RUNTIME, else the engine's)")
    g.add_argument("--container-ulimit", metavar="NAME=SOFT:HARD", action="append",
                   help="rlimit for the compiler container, repeatable (default: $EDGEPORT_CONTAINER_ULIMITS)")
    g.add_argument("--compiler-image", metavar="IMAGE", help="run this existing image instead of building "
                   "the shipped Dockerfile (default: $EDGEPORT_COMPILER_IMAGE)")
    from edgeport.cli.inputs import add_fix_arg, add_input_args  # --input-shapes, --val-range, --data

    add_fix_arg(add_input_args(p))


def options_from_args(args):
    """ConvertOptions from parsed arguments, without the input overrides (run() adds them: --data
    is read only once the files are checked). InputError on bad values."""
    from converters.options import ConvertOptions
    from edgeport.cli.args import judgement, model_loading, preprocessing

    return ConvertOptions(
        tolerances=judgement(args), accept_unvalidated=args.accept_unvalidated,
        **vars(model_loading(args, overrides=False)),
        dynamic_batch=args.dynamic_batch, opset=args.opset, preprocessing=preprocessing(args) or None,
        labels=args.labels, calibration=args.calibration, calibration_data=args.data,
        calibration_count=args.calibration_count,
        io_dtype=args.io_dtype, ort_optimization=args.ort_optimization,
        target_platform=args.target_platform, coreml_target=args.coreml_target,
        coreml_precision=args.coreml_precision,
        author=args.author, license=args.license, description=args.description,
        version=args.model_version, compiler=args.compiler,
        min_runtime_version=args.min_runtime_version, num_segments=args.num_segments,
        search_delegate=args.search_delegate, timeout=args.timeout,
        container_runtime=args.container_runtime, compiler_image=args.compiler_image,
        container_ulimits=tuple(args.container_ulimit) if args.container_ulimit else None,
        no_rewrite=args.no_rewrite, quiet=args.quiet or args.json)


def _shown(path):
    """A path as the user would type it: relative to the working folder when inside it."""
    import os

    try:
        rel = os.path.relpath(path)
    except ValueError:   # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel


def print_result(r, out):
    import os

    from edge.html import human_size

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
        line = f"  {_shown(a['path'])}  {a['format']}  {human_size(a['size'])}  {when}"
        if a.get("fixed_arguments"):
            line += "  (" + ", ".join(f"{k}={v}" for k, v in a["fixed_arguments"].items()) + " fixed)"
        if a.get("rewrites"):   # text from edgeport's own rewrites, not from the model
            line += "  (" + "; ".join(a["rewrites"]) + ")"
        v = a.get("validation")
        if v:
            on = f" (on {v['inputs']})" if " from " in (v.get("inputs") or "") else ""  # --data
            if v.get("passed") is None:   # never 'ok': nothing was compared
                line += f"  NOT VALIDATED{on}: {v.get('summary')}"
            else:
                line += f"  validation {'ok' if v['passed'] else 'FAILED'}{on}: {v.get('summary')}"
        print(line, file=out)
        if a["format"] == "edgetpu" and a["status"] == "converted":  # the compiler's op report
            from converters.edgetpu.compile import report_for_artefact

            text = report_for_artefact(a["path"])
            if text:
                for t in text.splitlines():
                    print("    " + t, file=out)
    for target, why in (r.get("refused") or {}).items():
        print(f"--to {target}: not made: {why}", file=out)
    if r.get("validation_failed"):
        print("  validation FAILED: the artefacts are kept, check them before use", file=out)
    if r.get("not_validated"):
        names = ", ".join(os.path.basename(p.rstrip("/")) for p in r["not_validated"])
        print(f"  NOT VALIDATED: {names}: kept, but nothing proves they compute what the source "
              f"does (validate them where they run; --accept-unvalidated exits 0)", file=out)


def json_model(r):
    """A pipeline result dict in the JSON contract's key names (model, size_bytes, *_ms)."""
    out = {"model": r["source"]}
    out.update((k, v) for k, v in r.items() if k not in ("source", "artefacts", "ms"))
    out["time_ms"] = round(r["ms"] if "ms" in r else  # a folder's per-model wall time, else the hops'
                           1000.0 * sum(a.get("seconds") or 0.0 for a in r.get("artefacts") or ()), 1)
    out["artefacts"] = [{"model": a["path"], "format": a["format"], "size_bytes": a["size"],
                         "conversion": a["conversion"], "status": a["status"],
                         "time_ms": round(a["seconds"] * 1000.0, 1), "validation": a["validation"],
                         **({"fixed_arguments": a["fixed_arguments"]} if a.get("fixed_arguments") else {}),
                         **({"rewrites": a["rewrites"]} if a.get("rewrites") else {}),
                         # the --to target an artefact of another format answers (a stateful
                         # int8 TFLite's stateless rewrite, for --to tflite)
                         **({"target": a["target"]} if a.get("target") else {})}
                        for a in r.get("artefacts") or ()]
    return out


def is_folder_mode(args):
    import os

    src = args.source
    return (os.path.isdir(src) and not args.torch_model
            and not os.path.exists(os.path.join(src, "saved_model.pb"))
            and not src.rstrip("/").endswith(".mlpackage"))


def files(args, run):
    """Reads the source (every source of a folder, with their sidecars), --labels, --data and
    --calibration; writes only into the output folder (-o, else beside the source)."""
    import os

    from edge.files import check_path_text
    from edgeport.cli.inputs import declare_inputs

    check_path_text(args.source, "source")
    if is_folder_mode(args):
        from converters.pipeline import find_models

        run.inputs_of(find_models(args.source), "source model", sidecar=True)
        outdir = args.source if args.output_dir is None else args.output_dir
    else:
        run.input(args.source, "source model", sidecar=True)
        outdir = (os.path.dirname(os.path.abspath(args.source.rstrip("/") or args.source))
                  if args.output_dir is None else args.output_dir)
    run.input(args.labels, "labels file")
    run.input(args.calibration, "--calibration folder")
    declare_inputs(args, run)
    run.tree(outdir, "output folder")
    run.output(args.report, "report", looks_like=b"<!DOCTYPE html")
    if not is_folder_mode(args):  # every artefact and sidecar of the planned routes, checked now
        from converters.pipeline import parse_targets, planned_outputs

        for path in planned_outputs(args.source, parse_targets(args.to), options_from_args(args),
                                    os.path.abspath(outdir)):
            run.output(path, "output", folder=path.endswith(".mlpackage"))
    # (folder mode: pipeline.check_folder_plan checks every source's planned outputs)

def run(args):
    import os
    import sys

    from converters import pipeline
    from edge.errors import EdgeportError
    from edgeport.cli.output import emit_json

    options = options_from_args(args)
    from edgeport.cli.inputs import overrides_from_args

    options.input_overrides = overrides_from_args(args)  # shapes and --arg values: in options_record
    if options.no_rewrite and options.input_overrides and options.input_overrides.fixed:
        from edge.errors import InputError

        raise InputError("--fix turns inputs into constants by rewriting the graph, and --no-rewrite "
                         "turns rewriting off", "drop one of the two")
    targets = pipeline.parse_targets(args.to)
    validate = not args.no_validate
    src = args.source
    is_folder = is_folder_mode(args)
    shard = None
    if args.shard:
        from converters.manifest import parse_shard
        from edge.errors import InputError

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
        _write_report(args, [json_model(r) for r in results])
        if args.json:
            extra = {"manifest": manifest} if manifest else {}
            return emit_json("convert", code, folder=os.path.abspath(src),
                             models=[json_model(r) for r in results], **extra)
        elif manifest:
            print(f"shard {shard[0]}/{shard[1]}: {len(results)} models; manifest: {manifest}")
        return code
    try:
        result = pipeline.convert_model(src, targets, options, args.output_dir, args.force, validate)
    except EdgeportError as e:
        if not (args.json and len(targets) > 1 and getattr(e, "refused", None)):
            raise
        # No target made: the JSON still gives each target's own reason (as folder mode does).
        print(f"error: {e}", file=sys.stderr)
        failed = pipeline.Result(os.path.abspath(src), status="failed", error=str(e), refused=e.refused)
        return emit_json("convert", e.exit_code, models=[json_model(failed.as_dict() | {"exit_code": e.exit_code})])
    d = result.as_dict()
    _write_report(args, [json_model(d | {"exit_code": result.exit_code})])
    if args.json:
        return emit_json("convert", result.exit_code,
                         models=[json_model(d | {"exit_code": result.exit_code})])
    print_result(d, sys.stdout)
    return result.exit_code


def _write_report(args, models):
    """--report FILE.html: the page of what this run made (converters/validation/html.py)."""
    if not args.report:
        return
    from converters.validation.html import convert_page, write_html

    write_html(args.report, convert_page(models))
