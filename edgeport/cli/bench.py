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

def run(args):  # noqa: C901 (a named exception: to be split along its jobs)
    import sys

    from converters.validation.input_match import for_model
    from converters.validation.signature import feeder
    from edge.bench import benchmark, cannot_run_here, format_table, mark_input_differences, plot
    from edge.errors import EdgeportError
    from edge.files import printable
    from edge.sidecar import read_sidecar
    from edgeport.cli.inputs import overrides_from_args
    from edgeport.cli.output import emit_json, say_lines

    if args.plot:  # refused before any model runs, not after
        from edge.files import check_output

        check_output(args.plot, "plot")
    overrides = overrides_from_args(args)

    mapped = {}   # model -> the mappings made for it (named again if it then fails)

    def feeder_for(model):
        """The user's inputs in this model's names and layout (a note for each mapping made)."""
        def feed(inputs, rng):
            ov, notes = for_model(overrides, inputs, read_sidecar(model))
            mapped[model] = notes
            feeds, shapes, more = feeder(ov)(inputs, rng)
            return feeds, shapes, notes + list(more)
        return feed

    results, code = [], 0
    for model in args.models:
        reason = cannot_run_here(model)
        if reason:  # its own row, the others still run
            results.append({"model": model, "status": "not run", "reason": reason, "exit_code": 0})
            if not args.json:
                print(f"not running {printable(model)}: {printable(reason)}", file=sys.stderr)
            continue
        for threads in args.threads:
            if not args.json:
                print(f"benchmarking {printable(model)} (threads={threads or 'default'}) ...", file=sys.stderr)
            try:
                results.append(benchmark(model, runs=args.runs, warmup=args.warmup, threads=threads,
                                         device=args.device, runtime=args.runtime, feeder=feeder_for(model)))
            except EdgeportError as e:
                if len(args.models) == 1:
                    raise
                # one model of a list that cannot run: its row says why, the others still run
                print(f"error: {e}", file=sys.stderr)
                reason = str(e) + "".join(f"; {n}" for n in mapped.get(model, ()))
                results.append({"model": model, "status": "failed", "reason": reason, "exit_code": e.exit_code})
                code = max(code, e.exit_code)
                break
            results[-1]["status"] = "ran"
            if not args.json:
                for note in results[-1].get("input_notes", []):
                    print(f"note: {printable(note)}", file=sys.stderr)
    if args.plot:
        plot(results, args.plot)
    if args.report:
        from edge.html import bench_page, write_html

        write_html(args.report, bench_page(results))
    if args.json:
        mark_input_differences(results)
        return emit_json("bench", code, models=results, **({"plot": args.plot} if args.plot else {}))
    say_lines(format_table(results))
    if args.plot:
        print(f"plot written to {args.plot}")
    return code
