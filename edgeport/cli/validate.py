"""`validate`: prove that converted models still compute what their source computed."""

HELP = "compare converted models with their source on the same inputs"
DESCRIPTION = """Run SOURCE and each CONVERTED model on the same inputs (seeded random values, or
real images through the preprocessing spec recorded in the models' sidecars) and compare
their outputs with Polygraphy's semantics: outputs matched by name (else by position),
layouts aligned (NCHW vs NHWC), quantized outputs dequantized, an element fails only when
it exceeds both --atol and --rtol under the chosen --check-stat.

Every output has a role (class scores, multi-label, detection, landmarks, dense map,
sequence, embedding, raw), inferred from its name, shape and the source's values and
printed with its evidence; --output-role NAME:ROLE sets it. Float vs float is judged by
tolerances; int8 / Edge TPU / float16 vs float by the role: top-1 agreement for class
scores (--min-top1), label decisions and F1 for multi-label, matched detections (recall,
precision, box error) for detectors, error relative to the range for landmarks, pixel
agreement for maps, per time step for sequences, cosine for embeddings and raw outputs.
A part of an output (a detector's score rows) whose range collapses fails on its own.
Only the structure compared (Core ML without a runtime) is 'structure only', not a pass.
Core ML is run on macOS; on
other systems an ML program runs in the Core ML reference executor (numpy, not the Core ML
runtime: the report says so), and a program with an op it has no kernel for is compared by
structure only.

An Edge TPU-compiled model needs an Edge TPU. Without one, run on the device:
  edgeport validate model_int8.tflite model_edgetpu.tflite --save-outputs tpu.npz
and here:
  edgeport validate model.keras model_edgetpu.tflite --load-outputs tpu.npz

exit status: 0 all models match, 1 a mismatch or a model not validated by numbers (0 with
--accept-unvalidated), 2 a usage or load error.

examples:
  edgeport validate model.keras model_float.tflite model_int8.tflite model.onnx
  edgeport validate net.pt2 net.onnx --inputs images/ --report report.json --junit junit.xml
  edgeport validate a.onnx b.onnx --atol 1e-3 --atol logits:1e-2 --check-stat mean"""


def configure(p):
    from edgeport.cli.args import (
        add_data,
        add_device,
        add_input_shape,
        add_json,
        add_judgement,
        add_model_loading,
        add_preprocessing,
        fraction,
        non_negative_float,
        top_k_int,
    )
    from edgeport.cli.inputs import add_fix_arg, add_input_args

    p.add_argument("source", help="the source model")
    p.add_argument("converted", nargs="*", help="converted models to compare with it")
    add_data(p)
    add_judgement(p)
    g = p.add_argument_group("comparison")
    g.add_argument("--check-stat", action="append", metavar="[OUTPUT:]STAT",
                   help="elemwise | max | mean | median | quantile (default elemwise)")
    g.add_argument("--quantile", type=fraction, default=0.99,
                   help="quantile for --check-stat quantile (0..1; default 0.99)")
    g.add_argument("--top-k", type=top_k_int, default=5, help="K of the top-k overlap (default 5)")
    g.add_argument("--mode", choices=["auto", "numeric", "agreement"], default="auto",
                   help="numeric: tolerances decide; agreement: each output's role decides; "
                        "auto: numeric for float vs float, else agreement")
    g.add_argument("--max-scale-error", type=non_negative_float, default=0.25,
                   help="agreement mode: largest |norm(converted)/norm(source) - 1| (>= 0; default 0.25)")
    g = p.add_argument_group("reports and saved outputs")
    g.add_argument("--report", metavar="FILE.json|FILE.html",
                   help="write the report: JSON, or with a .html name a self-contained page to look at "
                        "(per output its role, metric and error histogram; the photos where a classifier's "
                        "top-1 differs; a detector's boxes drawn over the source's)")
    g.add_argument("--junit", metavar="FILE.xml", help="write a JUnit XML report")
    g.add_argument("--save-outputs", metavar="FILE", help="save every model's outputs (npz)")
    g.add_argument("--load-outputs", metavar="FILE",
                   help="use outputs saved on a device for models that cannot run here")
    add_preprocessing(p)
    add_device(p)
    add_model_loading(p)
    add_input_shape(p, "input shape for PyTorch sources, e.g. 1 3 224 224")
    add_fix_arg(add_input_args(p))
    add_json(p, "print the JSON report instead of the table")


def options_from_args(args):
    """ValidateOptions from parsed arguments (InputError on bad values)."""
    from converters.validation.comparator import STATS, parse_per_output
    from converters.validation.validate import ValidateOptions
    from edge.errors import InputError
    from edgeport.cli.args import judgement, model_loading, preprocessing

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
    tol = judgement(args, check_stat=stat, quantile=args.quantile, top_k=args.top_k,
                    max_scale_error=args.max_scale_error,
                    mode=None if args.mode == "auto" else args.mode)
    return ValidateOptions(inputs=args.inputs, samples=args.samples, seed=args.seed, tolerances=tol,
                           preprocessing=preprocessing(args) or None, save_outputs=args.save_outputs,
                           load_outputs=args.load_outputs, device=args.device, runtime=args.runtime,
                           **vars(model_loading(args)), accept_unvalidated=args.accept_unvalidated)


def files(args, run):
    """Reads SOURCE, the converted models (and sidecars), --data, --load-outputs and the
    --inputs folder; writes only --report, --junit and --save-outputs."""
    from edgeport.cli.inputs import declare_inputs

    run.input(args.source, "source model", sidecar=True)
    run.inputs_of(args.converted, "converted model", sidecar=True)
    run.input(args.load_outputs, "--load-outputs file")
    if args.inputs not in (None, "random"):
        run.input(args.inputs, "--inputs folder")
    declare_inputs(args, run)
    run.output(args.report, "report", looks_like=b"<!DOCTYPE html" if _is_html(args.report) else b"{")
    run.output(args.junit, "JUnit report", looks_like=b"<")
    run.output(args.save_outputs, "saved outputs", looks_like=b"PK")

def run(args):
    import sys

    from converters.artefact import open_model
    from converters.pipeline import quiet_frameworks
    from converters.validation.report import report_dict, table, write_json, write_junit
    from converters.validation.validate import validate
    from edge.errors import InputError
    from edgeport.cli.output import emit_json, say_lines

    opts = options_from_args(args)
    quiet_frameworks()
    if not args.converted and not args.save_outputs:
        raise InputError("give at least one CONVERTED model to compare with SOURCE",
                         "or --save-outputs FILE to only record SOURCE's outputs on a device")
    from edge.files import check_output

    for path, what in ((args.report, "report"), (args.junit, "JUnit report"), (args.save_outputs, "outputs")):
        if path:  # refused before anything runs, not after
            check_output(path, what)
    source = open_model(args.source, args.torch_model)
    converted = [open_model(p, None) for p in args.converted]
    report = validate(source, converted, opts)
    if args.report and _is_html(args.report):
        from converters.validation.html import validate_page, write_html

        write_html(args.report, validate_page(report, report_dict(report)))
    elif args.report:
        write_json(report, args.report)
    if args.junit:
        write_junit(report, args.junit)
    code = report.exit_code if args.converted else 0
    if args.json:
        body = report_dict(report)
        body.pop("exit_code", None)
        emit_json("validate", code, **body)
    else:
        say_lines(table(report))
    if args.save_outputs:
        print(f"outputs saved to {args.save_outputs}", file=sys.stderr)
    return code


def _is_html(path):
    return bool(path) and str(path).lower().endswith((".html", ".htm"))
