"""`edgeport bench`: latency of one or more models, side by side."""

HELP = "benchmark model latency (TFLite; ONNX/ORT when onnxruntime is installed)"
DESCRIPTION = """Benchmark models on this machine: load time, first inference, then min, median,
p90, p99, max, mean and std of N timed runs on seeded random inputs, and throughput.

example:
  edgeport bench model_float.tflite model_int8.tflite model.onnx --runs 200 --threads 2"""


def configure(p):
    from edgeport.cli.args import add_device, add_json, add_threads, runs_int, warmup_int

    p.add_argument("models", nargs="+", metavar="MODEL", help=".tflite, .onnx or .ort files")
    p.add_argument("--runs", type=runs_int, default=100, help="timed runs (default 100)")
    p.add_argument("--warmup", type=warmup_int, default=5, help="untimed runs after the first (default 5)")
    add_threads(p, several=True)
    add_device(p, device_help="auto, cpu or an Edge TPU spec (TFLite only)")
    add_json(p)
    p.add_argument("--plot", metavar="FILE.png", help="write a latency plot (needs matplotlib)")
    p.add_argument("--report", metavar="FILE.html",
                   help="write a self-contained HTML report (summary table and latency chart)")
    from edgeport.cli.inputs import add_input_args  # realworld: --input-shapes, --val-range, --data

    add_input_args(p)


def files(args, run):
    """Reads the models (and sidecars) and --data; writes only --plot and --report."""
    from edgeport.cli.inputs import declare_inputs

    run.inputs_of(args.models, "model", sidecar=True)
    declare_inputs(args, run)
    run.output(args.plot, "plot", looks_like=b"\x89PNG")
    run.output(args.report, "report", looks_like=b"<!DOCTYPE html")

def run(args):
    import sys

    from edge.bench import benchmark, format_table, plot
    from converters.validation.signature import feeder
    from edgeport.cli.inputs import overrides_from_args
    from edgeport.cli.output import emit_json, say_lines

    if args.plot:  # refused before any model runs, not after
        from edge.files import check_output

        check_output(args.plot, "plot")
    feed = feeder(overrides_from_args(args))
    results = []
    for model in args.models:
        for threads in args.threads:
            if not args.json:
                print(f"benchmarking {model} (threads={threads or 'default'}) ...", file=sys.stderr)
            results.append(benchmark(model, runs=args.runs, warmup=args.warmup, threads=threads,
                                     device=args.device, runtime=args.runtime, feeder=feed))
            if not args.json:
                for note in results[-1].get("input_notes", []):
                    print(f"note: {note}", file=sys.stderr)
    if args.plot:
        plot(results, args.plot)
    if args.report:
        from edge.html import bench_page, write_html

        write_html(args.report, bench_page(results))
    if args.json:
        return emit_json("bench", 0, models=results, **({"plot": args.plot} if args.plot else {}))
    say_lines(format_table(results))
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0
