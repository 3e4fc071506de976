"""`validate`: prove that converted models still compute what their source computed."""

HELP = "compare converted models with their source on the same inputs"
DESCRIPTION = """Run SOURCE and each CONVERTED model on the same inputs (seeded random values, or
real images through the preprocessing spec recorded in the models' sidecars) and compare
their outputs with Polygraphy's semantics: outputs matched by name (else by position),
layouts aligned (NCHW vs NHWC), quantized outputs dequantized, an element fails only when
it exceeds both --atol and --rtol under the chosen --check-stat.

Float vs float is judged by tolerances; int8 / Edge TPU / float16 vs float by top-1
agreement (--min-top1) and cosine similarity (--min-cosine). Core ML is run on macOS; on
other systems an ML program runs in the Core ML reference executor (numpy, not the Core ML
runtime: the report says so), and a program with an op it has no kernel for is compared by
structure only.

An Edge TPU-compiled model needs an Edge TPU. Without one, run on the device:
  edgeport validate model_int8.tflite model_edgetpu.tflite --save-outputs tpu.npz
and here:
  edgeport validate model.keras model_edgetpu.tflite --load-outputs tpu.npz

exit status: 0 all models match, 1 a mismatch, 2 a usage or load error.

examples:
  edgeport validate model.keras model_float.tflite model_int8.tflite model.onnx
  edgeport validate net.pt2 net.onnx --inputs images/ --report report.json --junit junit.xml
  edgeport validate a.onnx b.onnx --atol 1e-3 --atol logits:1e-2 --check-stat mean"""


def configure(p):
    p.add_argument("source", help="the source model")
    p.add_argument("converted", nargs="*", help="converted models to compare with it")
    p.add_argument("--inputs", default="random", metavar="random|DIR",
                   help="'random' (seeded) or a folder of images (default random)")
    p.add_argument("--samples", type=int, help="number of samples (default 10 random / 20 images)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--atol", action="append", metavar="[OUTPUT:]VALUE",
                   help="absolute tolerance, optionally per output (repeatable; default 1e-4)")
    p.add_argument("--rtol", action="append", metavar="[OUTPUT:]VALUE",
                   help="relative tolerance, optionally per output (repeatable; default 1e-3)")
    p.add_argument("--check-stat", action="append", metavar="[OUTPUT:]STAT",
                   help="elemwise | max | mean | median | quantile (default elemwise)")
    p.add_argument("--quantile", type=float, default=0.99, help="quantile for --check-stat quantile")
    p.add_argument("--top-k", type=int, default=5, help="K of the top-k overlap (default 5)")
    p.add_argument("--mode", choices=["auto", "numeric", "agreement"], default="auto",
                   help="numeric: tolerances decide; agreement: top-1 and cosine decide; "
                        "auto: numeric for float vs float, else agreement")
    p.add_argument("--min-top1", type=float, default=0.8,
                   help="agreement mode: least fraction of samples with the same top-1 (default 0.8)")
    p.add_argument("--min-cosine", type=float, default=0.95,
                   help="agreement mode: least mean cosine similarity (default 0.95)")
    p.add_argument("--max-scale-error", type=float, default=0.25,
                   help="agreement mode: largest |norm(converted)/norm(source) - 1| (default 0.25)")
    p.add_argument("--report", metavar="FILE.json", help="write a JSON report")
    p.add_argument("--junit", metavar="FILE.xml", help="write a JUnit XML report")
    p.add_argument("--save-outputs", metavar="FILE", help="save every model's outputs (npz)")
    p.add_argument("--load-outputs", metavar="FILE",
                   help="use outputs saved on a device for models that cannot run here")
    p.add_argument("--size", type=int, nargs="+", metavar="H [W]", help="image input size")
    p.add_argument("--mean", type=float, nargs="+", help="preprocessing mean, 0..255 units")
    p.add_argument("--std", type=float, nargs="+", help="preprocessing std, 0..255 units")
    p.add_argument("--device", default="auto", help="TFLite device: auto, cpu, usb, usb:N, pci...")
    p.add_argument("--runtime", choices=["ai_edge_litert", "tflite_runtime", "tensorflow"],
                   help="force one TFLite backend")
    p.add_argument("--torch-model", metavar="MODULE:FACTORY",
                   help="for a PyTorch state dict: the function building the module")
    p.add_argument("--input-shape", type=int, nargs="+", metavar="D",
                   help="input shape for PyTorch sources, e.g. 1 3 224 224")
    p.add_argument("--trust-pickle", action="store_true", help="allow full pickles (trusted files only)")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")


def options_from_args(args):
    """ValidateOptions from parsed arguments (InputError on bad values)."""
    from edge.errors import InputError

    from converters.validation.comparator import STATS, Tolerances, parse_per_output
    from converters.validation.validate import ValidateOptions

    def per_output(values, cast, what, default):
        try:
            v = parse_per_output(values, cast, what)
        except ValueError as e:
            raise InputError(str(e)) from None
        return default if v == {} else v

    stat = per_output(args.check_stat, str, "--check-stat", "elemwise")
    for s in (stat.values() if isinstance(stat, dict) else [stat]):
        if s not in STATS:
            raise InputError(f"unknown --check-stat '{s}'", f"choose one of {', '.join(STATS)}")
    tol = Tolerances(atol=per_output(args.atol, float, "--atol", Tolerances.atol),
                     rtol=per_output(args.rtol, float, "--rtol", Tolerances.rtol),
                     check_stat=stat, quantile=args.quantile, top_k=args.top_k,
                     min_top1=args.min_top1, min_cosine=args.min_cosine, max_scale_error=args.max_scale_error,
                     mode=None if args.mode == "auto" else args.mode)
    if args.top_k < 1:
        raise InputError("--top-k must be at least 1")
    if not 0 <= args.quantile <= 1:
        raise InputError("--quantile must be between 0 and 1")
    pre = None
    if args.size or args.mean or args.std:
        pre = {}
        if args.size:
            pre["size"] = args.size * 2 if len(args.size) == 1 else args.size[:2]
        if args.mean:
            pre["mean"] = args.mean
        if args.std:
            pre["std"] = args.std
    return ValidateOptions(inputs=args.inputs, samples=args.samples, seed=args.seed, tolerances=tol,
                           preprocessing=pre, save_outputs=args.save_outputs,
                           load_outputs=args.load_outputs, device=args.device,
                           runtime=args.runtime, torch_model=args.torch_model,
                           input_shape=tuple(args.input_shape) if args.input_shape else None,
                           trust_pickle=args.trust_pickle)


def run(args):
    from converters.artefact import open_model
    import json
    import sys

    from edge.errors import InputError

    from converters.validation.report import report_dict, table, write_json, write_junit
    from converters.validation.validate import validate

    opts = options_from_args(args)
    _quiet_frameworks()
    if not args.converted and not args.save_outputs:
        raise InputError("give at least one CONVERTED model to compare with SOURCE",
                         "or --save-outputs FILE to only record SOURCE's outputs on a device")
    source = open_model(args.source, args.torch_model)
    converted = [open_model(p, None) for p in args.converted]
    report = validate(source, converted, opts)
    if args.report:
        write_json(report, args.report)
    if args.junit:
        write_junit(report, args.junit)
    if args.json:
        print(json.dumps(report_dict(report), indent=2))
    else:
        print(table(report))
    if args.save_outputs:
        print(f"outputs saved to {args.save_outputs}", file=sys.stderr)
    if not args.converted:
        return 0
    return report.exit_code




def _quiet_frameworks():
    """Framework loggers that warn about untested versions on every import."""
    import logging
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("coremltools", "torchao", "torch", "tf2onnx", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
