"""`edgeport bench`: latency of one or more models, side by side."""

HELP = "benchmark model latency (TFLite; ONNX/ORT when onnxruntime is installed)"
DESCRIPTION = """Benchmark models on this machine: load time, first inference, then min, median,
p90, p99, max, mean and std of N timed runs on seeded random inputs, and throughput.

example:
  edgeport bench model_float.tflite model_int8.tflite model.onnx --runs 200 --threads 2"""


def configure(p):
    p.add_argument("models", nargs="+", metavar="MODEL", help=".tflite, .onnx or .ort files")
    p.add_argument("--runs", type=int, default=100, help="timed runs (default 100)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs after the first (default 5)")
    p.add_argument("--threads", type=int, nargs="+", default=[None],
                   help="CPU threads; several values benchmark each (default: runtime's choice)")
    p.add_argument("--device", default="auto", help="auto, cpu or an Edge TPU spec (TFLite only)")
    p.add_argument("--runtime", choices=["ai_edge_litert", "tflite_runtime", "tensorflow"],
                   help="force one TFLite backend")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write a latency plot (needs matplotlib)")
    from edgeport.cli.inputs import add_input_args  # realworld: --input-shapes, --val-range, --data

    add_input_args(p)


def run(args):
    import json
    import sys

    from edge.bench import benchmark, format_table, plot
    from converters.validation.signature import feeder
    from edgeport.cli.inputs import overrides_from_args

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
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results))
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0
