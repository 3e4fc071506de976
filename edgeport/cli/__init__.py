"""The `edgeport` command: a thin dispatcher over command modules, each imported on demand.

A command module defines HELP (one line), configure(parser) and run(args) -> exit code.
Modules import nothing heavy at the top, so `edgeport X --help` starts in a blink.
"""

import argparse
import importlib
import sys

from edgeport import __version__

COMMANDS = {
    "classify": "edgeport.cli.classify",
    "bench": "edgeport.cli.bench",
    "convert": "edgeport.cli.convert",
    "inspect": "edgeport.cli.inspect",
    "validate": "edgeport.cli.validate",
    "check": "edgeport.cli.check",
    "eval": "edgeport.cli.eval",
    "manifest": "edgeport.cli.manifest",
}


def _build(name, module, subparsers):
    mod = importlib.import_module(module)
    p = subparsers.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    # SUPPRESS: no default here, or it would reset `edgeport --debug CMD` to False.
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    mod.configure(p)
    p.set_defaults(_run=mod.run)


def build_parser(only=None, prog="edgeport"):
    parser = argparse.ArgumentParser(
        prog=prog, description="edgeport: take a trained model to the edge and prove it still works there.",
        epilog="exit codes: 0 success, 1 failure (e.g. a validation mismatch), 2 usage or input error. "
               "'edgeport COMMAND --help' for each command.")
    parser.add_argument("--version", action="version", version=f"edgeport {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        if only is None or name == only:
            _build(name, module, sub)
    return parser


def run_parsed(args):
    from edge.errors import EdgeportError

    try:
        return int(args._run(args) or 0)
    except EdgeportError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:  # a bug: still one line unless --debug
        if args.debug:
            raise
        print(f"error: internal error: {type(e).__name__}: {e} (run again with --debug for the "
              "traceback, and please report it)", file=sys.stderr)
        return 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return run_parsed(args)


def _short_form(command):
    def entry(argv=None):
        argv = sys.argv[1:] if argv is None else list(argv)
        mod = importlib.import_module(COMMANDS[command])
        parser = argparse.ArgumentParser(prog=command, description=getattr(mod, "DESCRIPTION", mod.HELP),
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--debug", action="store_true", help="show tracebacks")
        mod.configure(parser)
        parser.set_defaults(_run=mod.run)
        return run_parsed(parser.parse_args(argv))

    return entry


classify_main = _short_form("classify")
convert_main = _short_form("convert")
