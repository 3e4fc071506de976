"""The `edgeport` command: a thin dispatcher over command modules, each imported on demand.

A command module defines HELP (one line), configure(parser), files(args, run) (every file
the command reads and writes, declared on an edge.run.Run and checked before any work) and
run(args) -> exit code.
Modules import nothing heavy at the top, so `edgeport X --help` starts in a blink.
The command line lives here and only here: edge/ and converters/ expose library functions
(edge.classify, edge.bench, converters.pipeline, converters.validation.*) that these
modules call. `classify` and `bench` take from converters/ only the numpy-only input
signature (converters.validation.signature): they run on a Pi.
"""

import argparse
import importlib
import sys

from edgeport import __version__
from edgeport.cli.args import Parser

COMMANDS = {
    "classify": "edgeport.cli.classify",
    "bench": "edgeport.cli.bench",
    "convert": "edgeport.cli.convert",
    "inspect": "edgeport.cli.inspect",
    "validate": "edgeport.cli.validate",
    "check": "edgeport.cli.check",
    "eval": "edgeport.cli.eval",
    "toolenv": "edgeport.cli.toolenv",
    "manifest": "edgeport.cli.manifest",
}


def _build(name, module, subparsers):
    mod = importlib.import_module(module)
    p = subparsers.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    # SUPPRESS: no default here, or it would reset `edgeport --debug CMD` to False.
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    mod.configure(p)
    p.set_defaults(_run=mod.run, _files=mod.files)


# What the dispatcher reads of every command's namespace: a command without --json, a model,
# a source or models keeps these defaults, so none is ever guessed with getattr.
DISPATCH_DEFAULTS = {"json": False, "model": None, "source": None, "models": None,
                     "_deprecated": None, "_run": None, "_files": None}


def _dispatch_defaults(parser):
    """DISPATCH_DEFAULTS for the attributes the parser's own flags do not set."""
    have = {a.dest for a in parser._actions}
    parser.set_defaults(**{k: v for k, v in DISPATCH_DEFAULTS.items() if k not in have})


def build_parser(only=None, prog="edgeport"):
    parser = Parser(
        prog=prog, description="edgeport: take a trained model to the edge and prove it still works there.",
        epilog="exit codes: 0 success, 1 failure (e.g. a validation mismatch), 2 usage or input error. "
               "'edgeport COMMAND --help' for each command.")
    parser.add_argument("--version", action="version", version=f"edgeport {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    _dispatch_defaults(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        if only is None or name == only:
            _build(name, module, sub)
    return parser


VERBOSE_HELP = ("show the frameworks' own output (banners, warnings, INFO lines), hidden by default; "
                "also EDGEPORT_VERBOSE=1")


def run_parsed(args):
    """Run the command with the frameworks' chatter hidden (edge.console.quiet) unless
    --verbose; a failing command still shows the error lines the tools printed. With --json,
    stdout gets exactly one JSON document whatever happens (see edgeport.cli.output.one_document)."""
    from edge.console import quiet, set_plain

    set_plain(args.json)   # --json: progress as plain lines, even on a terminal
    code = [0]
    # the tools' error lines are shown for a failure (exit 1), not for a usage or input error
    # (exit 2, one line) or an interruption (130, 143)
    with quiet(verbose=args.verbose, failed=lambda: code[0] == 1):
        code[0] = _run_json(args) if args.json else _run_command(args)
    return code[0]


def _run_json(args):
    from edgeport.cli.output import captured_stdout, one_document

    failure = []
    code, out = 1, None
    try:
        with captured_stdout() as out:
            code = _run_command(args, failure.append)
    finally:  # also when --debug re-raises: the document first, then the traceback
        _write_json(one_document(args.command or "edgeport", code, out.text if out else "",
                                 failure[0] if failure else None, _models_of(args)))
    return code


def _write_json(text):
    from edgeport.cli.output import say_lines

    try:
        say_lines(text.rstrip("\n"))   # line by line: the sanitizer lets each line's own newline through
        sys.stdout.flush()
    except BrokenPipeError:
        pass


def _models_of(args):
    """The model paths a command was given (for an error document), as far as the parsed flags say."""
    for value in (args.model, args.source):
        if isinstance(value, str):
            return [value]
    value = args.models
    return [m for m in value if isinstance(m, str)] if isinstance(value, list) else []


def _run_command(args, on_failure=lambda message: None):
    """Run a parsed command: its declared files (the module's files(args, run)) are checked
    before any work, and every write during the run is held to them (edge/run.py)."""
    from edge.errors import EdgeportError
    from edge.run import Run

    for note in args._deprecated or ():
        print(note, file=sys.stderr)
    try:
        run = Run(f"edgeport {args.command or ''}".strip())
        args._files(args, run)
        with run.active():
            return int(args._run(args) or 0)
    except EdgeportError as e:
        on_failure(str(e))
        if args.debug:
            raise
        from edge.files import printable

        # One line, always: a file name with a newline or ESC in the message is escaped.
        print(f"error: {printable(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:  # SIGTERM too (converters.atomic.Terminated): exit 143
        on_failure("interrupted" if not str(e) else f"interrupted: {e}")
        print("interrupted" if not str(e) else f"interrupted: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    except BrokenPipeError:
        return 1
    except Exception as e:  # a bug: still one line unless --debug
        on_failure(f"internal error: {type(e).__name__}: {e}")
        if args.debug:
            raise
        print(f"error: internal error: {type(e).__name__}: {e} (run again with --debug for the "
              "traceback, and please report it)", file=sys.stderr)
        return 1


def main(argv=None):
    from edgeport.cli.output import escaping_streams

    with escaping_streams():  # the one sanitizer of text output (edgeport/cli/output.py)
        return _main(argv)


def _main(argv):
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=first if first in COMMANDS else None)
    try:
        args = _parse(parser, argv, first if first in COMMANDS else None)
    except SystemExit as e:  # --help, --version, or a usage error (already printed)
        return _exit_code(e)
    if not args._run:
        parser.print_help()
        return 2
    return run_parsed(args)


def _parse(parser, argv, command):
    """parser.parse_args(argv); a usage error of a command given --json also prints its one
    JSON document (exit_code 2, the error line) on stdout."""
    if "--json" not in argv or "--" in argv[:argv.index("--json")]:
        return parser.parse_args(argv)
    import contextlib
    import io

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv)
    except SystemExit as e:
        code = _exit_code(e)
        if code == 2:
            from edgeport.cli.output import one_document

            lines = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
            message = lines[-1][len("error:"):].strip() if lines else "usage error"
            _write_json(one_document(command or "edgeport", 2, "", f"usage: {message}", []))
        raise
    finally:
        sys.stderr.write(err.getvalue())


def _exit_code(e):
    return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)


def _short_form(command):
    def entry(argv=None):
        from edgeport.cli.output import escaping_streams

        with escaping_streams():
            return _entry(argv)

    def _entry(argv):
        argv = sys.argv[1:] if argv is None else list(argv)
        mod = importlib.import_module(COMMANDS[command])
        parser = Parser(prog=command, description=getattr(mod, "DESCRIPTION", mod.HELP),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--debug", action="store_true", help="show tracebacks")
        parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
        mod.configure(parser)
        _dispatch_defaults(parser)
        parser.set_defaults(_run=mod.run, _files=mod.files)
        try:
            args = _parse(parser, argv, command)
        except SystemExit as e:
            return _exit_code(e)
        args.command = command
        return run_parsed(args)

    return entry


classify_main = _short_form("classify")
convert_main = _short_form("convert")
