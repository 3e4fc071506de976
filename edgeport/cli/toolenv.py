"""`toolenv`: show, build, rebuild or remove the isolated environments of converter tools."""

HELP = "show or (re)build the isolated environments of converter tools (onnx2tf)"
DESCRIPTION = """Some converters pin packages that clash with edgeport's own (onnx2tf pins TensorFlow
2.19 and NumPy 1.26). edgeport runs them from their own virtual environment, created from
pinned requirements on first use and reused after. This command shows where each lives and
what is in it, and builds, rebuilds or removes it.

Location: $EDGEPORT_TOOLENV_DIR, else ~/.cache/edgeport/toolenv (or $XDG_CACHE_HOME);
interpreter: $EDGEPORT_TOOLENV_PYTHON, else the one running edgeport.

examples:
  toolenv                      # every tool: where, built or not
  toolenv onnx2tf              # one tool, with its installed packages
  toolenv onnx2tf --build      # build it now (else the first conversion does)
  toolenv onnx2tf --rebuild    # remove and build again"""


def configure(p):
    p.add_argument("tool", nargs="?", help="a tool name (default: all)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--build", action="store_true", help="build the environment if it is not there")
    g.add_argument("--rebuild", action="store_true", help="remove the environment and build it again")
    g.add_argument("--remove", action="store_true", help="delete every environment of the tool")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def format_info(d, packages=True):
    lines = [f"{d['tool']}: {d['what']}",
             f"  path:         {d['folder']}",
             "  status:       " + (f"ready (built {d['created']} in {d['build_seconds']} s)" if d["ready"]
                                    else "being built (by another edgeport)" if d.get("building")
                                    else "not built (the first conversion that needs it builds it, "
                                         "or: edgeport toolenv " + d["tool"] + " --build)"),
             f"  python:       {d['python']} ({d['interpreter']})",
             f"  requirements: {d['requirements']} ({len(d['pins'])} pins)",
             f"  rebuild:      {d['rebuild']}",
             f"  remove:       {d['remove']}"]
    for p in d["stale_envs"]:
        lines.append(f"  older env:    {p} (from other pins or another Python; --remove deletes it)")
    if packages and d["installed"]:
        lines.append("  installed:    " + " ".join(d["installed"]))
    return "\n".join(lines)


def files(args, run):
    """Builds tool environments in edgeport's cache (their own code); declares no run file."""

def run(args):
    import sys

    from converters import toolenv

    names = [args.tool] if args.tool else sorted(toolenv.TOOLS)
    for n in names:
        toolenv.get_tool(n)
    say = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    removed = []
    for n in names:
        if args.remove:
            removed += toolenv.remove(n)
        elif args.build or args.rebuild:
            toolenv.ensure(n, say, rebuild=args.rebuild)
    infos = [toolenv.info(n) for n in names]
    if args.json:
        from edgeport.cli.output import emit_json

        return emit_json("toolenv", 0, toolenvs=infos, removed=removed)
    for p in removed:
        print(f"removed {p}")
    from edgeport.cli.output import say_lines

    for d in infos:
        say_lines(format_info(d, packages=bool(args.tool)))
    return 0
