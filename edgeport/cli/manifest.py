"""`manifest merge`: join the shard manifests of `convert DIR --shard K/N` into one."""

HELP = "join the manifests of a sharded folder conversion (convert DIR --shard K/N)"
DESCRIPTION = """Join shard manifests (edgeport-manifest.shard-K-of-N.json, written by
`edgeport convert DIR --shard K/N`) into one, and check that the zoo is complete: every shard
1..N present exactly once, no model in two shards, every model in the shard its hash puts
it in, all shards made from the same folder and targets. Prints one row per shard
(converted, validated, refused, failed) and a total, then each refused or failed model.

exit status: 0 every shard present and every model converted, 1 a shard is missing or
repeated, or a model was refused or failed, 2 a usage error or an unreadable manifest.

examples:
  edgeport manifest merge out-*/edgeport-manifest.shard-*-of-8.json -o zoo-manifest.json
  edgeport manifest merge shard-1/*.json shard-2/*.json --json"""


def configure(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    m = sub.add_parser("merge", help="join shard manifests and report on the whole zoo",
                       description=DESCRIPTION)
    m.add_argument("manifests", nargs="+", metavar="MANIFEST", help="shard manifests (JSON)")
    m.add_argument("-o", "--output", metavar="FILE", help="write the merged manifest here")
    m.add_argument("--json", action="store_true", help="print the merged manifest as JSON")


def files(args, run):
    """Reads the shard manifests; writes only -o."""
    run.inputs_of(args.manifests, "manifest")
    run.output(args.output, "merged manifest", looks_like=b"{")

def run(args):
    import json
    import os

    from converters.atomic import write_text_atomic
    from converters.manifest import merge_manifests, summary_table
    from edge.errors import InputError

    merged = merge_manifests(args.manifests)
    if args.output:
        if os.path.isdir(args.output):
            raise InputError(f"-o {args.output} is a folder", "give a file name, e.g. -o merged.json")
        write_text_atomic(args.output, json.dumps(merged, indent=2) + "\n")
    code = 0 if merged["passed"] else 1
    if args.json:
        from edgeport.cli.output import emit_json

        return emit_json("manifest", code, **merged)
    else:
        from edgeport.cli.output import say_lines

        say_lines(summary_table(merged))
        if args.output:
            print(f"merged manifest: {args.output}")
        bad = merged["counts"]["refused"] + merged["counts"]["failed"]
        if merged["passed"]:
            verdict = "complete, every model converted"
        elif merged["problems"]:
            verdict = f"NOT complete ({len(merged['problems'])} problem{'s' * (len(merged['problems']) > 1)})"
        else:
            verdict = f"every shard present, {bad} model{'s' * (bad > 1)} refused or failed"
        print(f"{len(merged['models'])} models in {len(merged['shards'])} of {merged['n']} shards: {verdict}")
    return code
