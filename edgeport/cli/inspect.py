"""`edgeport inspect MODEL`: what a TFLite model holds, and what the Edge TPU would make of it."""

HELP = "describe a TFLite model (inputs, outputs, ops); --edgetpu predicts the Edge TPU mapping"


DESCRIPTION = """\
Describe a TFLite model without running it: format, inputs and outputs (shape, dtype,
quantization), op counts. On a model compiled for the Edge TPU it lists the Edge TPU
subgraphs, the ops outside them and the tensors at their boundary. With --edgetpu on a
plain model it predicts, from Coral's documented op table and the compiler's one-partition
rule, which ops the Edge TPU compiler would map and which would stay on the CPU, and why.

examples:
  edgeport inspect model_int8.tflite --edgetpu
  edgeport inspect model_edgetpu.tflite --json
"""


def configure(p):
    from edgeport.cli.args import add_json, positive_int

    p.add_argument("model", help="a .tflite file")
    p.add_argument("--edgetpu", action="store_true",
                   help="predict the Edge TPU compiler's mapping (no compiler needed)")
    p.add_argument("--min-runtime-version", type=positive_int, default=None, metavar="N",
                   help="with --edgetpu: leave ops that need a newer Edge TPU runtime on the CPU "
                        "(integer >= 1)")
    p.add_argument("--report", metavar="FILE.html",
                   help="write a self-contained HTML report; with --edgetpu it draws the op sequence "
                        "coloured by placement, the first op on the CPU and what would keep it on the TPU")
    add_json(p)


def run(args):
    import converters.validation.inspect as _lib
    from edgeport.cli.output import emit_json

    if args.report:
        from edge.files import check_output

        check_output(args.report, "report")
    d = _lib.describe(args.model, args.edgetpu, args.min_runtime_version)
    if args.report:
        from converters.validation.html import inspect_page, write_html

        write_html(args.report, inspect_page(d))
    if args.json:
        return emit_json("inspect", 0, **d)
    print(_lib.format_text(d))
    return 0
