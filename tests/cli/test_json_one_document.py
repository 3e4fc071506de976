"""With --json, stdout is exactly one JSON document on every outcome of every command.

The dispatcher (edgeport/cli/__init__.py) guarantees it, not each command: whatever a command
prints or raises, stdout receives one envelope (command, edgeport_version, exit_code equal to
the exit status). The cases are generated over every command and every outcome.
"""

import importlib
import json

import pytest

from edgeport.cli import COMMANDS, build_parser
from tests.conftest import DATA, run_cli


def one_document(command, code, out):
    doc = json.loads(out)  # the whole of stdout parses as one JSON value
    assert isinstance(doc, dict) and list(doc)[:3] == ["command", "edgeport_version", "exit_code"], doc
    assert doc["command"] == command and doc["exit_code"] == code, doc
    return doc


def _argv(command):
    """The shortest command line of `command` its parser accepts, with --json (paths do not exist)."""
    argv = [command] + (["merge"] if command == "manifest" else [])
    parser = build_parser(only=command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    if command == "manifest":
        sub = next(a for a in sub._actions if a.dest == "action").choices["merge"]
    for action in sub._actions:
        if not action.option_strings and action.nargs not in ("?", "*"):
            argv.append(f"/nonexistent/{action.dest}.tflite")
        elif action.required and action.option_strings:
            argv += [action.option_strings[0], f"/nonexistent/{action.dest}"]
    return argv + ["--json"]


def _raiser(error):
    def run(args):
        print("some progress text a command printed on stdout")
        raise error
    return run


def _printer(code, twice=False):
    def run(args):
        from edgeport.cli.output import emit_json

        print("chatter before the document")
        emit_json(args.command, code, model="m.tflite")
        if twice:
            emit_json(args.command, code, model="m.tflite")
        return code
    return run


def _silent(code):
    def run(args):
        print("a command that forgot its JSON")
        return code
    return run


def _outcomes():
    from edge.errors import EdgeportError, InputError

    return {
        "success": (_printer(0), 0),
        "success-silent": (_silent(0), 0),
        "exit1-document": (_printer(1), 1),
        "exit1-raised": (_raiser(EdgeportError("a target failed")), 1),
        "exit1-silent": (_silent(1), 1),
        "exit2-raised": (_raiser(InputError("bad input")), 2),
        "internal-error": (_raiser(RuntimeError("a bug")), 1),
        "two-documents": (_printer(0, twice=True), 0),
    }


@pytest.mark.parametrize("outcome", ["success", "success-silent", "exit1-document", "exit1-raised",
                                     "exit1-silent", "exit2-raised", "internal-error", "two-documents"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_outcome_prints_one_document(capsys, monkeypatch, command, outcome):
    run, want = _outcomes()[outcome]
    module = importlib.import_module(COMMANDS[command])
    monkeypatch.setattr(module, "run", run)
    # the stand-in commands read no file: their (nonexistent) paths are not declared either
    monkeypatch.setattr(module, "files", lambda args, run: None)
    code, out, err = run_cli(capsys, *_argv(command))
    assert code == want, err
    doc = one_document(command, code, out)
    if code and outcome != "exit1-document":
        assert doc.get("error"), doc  # the reason, not only a number
    if outcome in ("exit1-raised", "exit2-raised", "internal-error"):
        assert "a target failed" in doc["error"] or "bad input" in doc["error"] or "a bug" in doc["error"]
        assert "progress text" in err  # stray stdout text moves to stderr, not lost


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_real_input_and_usage_errors_print_one_document(capsys, command):
    argv = _argv(command)
    code, out, err = run_cli(capsys, *argv)
    if command != "toolenv":  # toolenv takes no file: a missing tool name is not an error
        assert code in (1, 2), (code, err)
    one_document(command, code, out)
    code, out, err = run_cli(capsys, *argv, "--no-such-flag")
    assert code == 2
    doc = one_document(command, 2, out)
    assert "no-such-flag" in doc["error"]
    assert "error:" in err  # the line on stderr stays


def test_single_target_failure_prints_one_document(capsys, tmp_path):
    """`convert --to edgetpu` without calibration data fails for its one target: still one document."""
    code, out, err = run_cli(capsys, "convert", DATA / "color_float.tflite", "--to", "edgetpu",
                             "-o", tmp_path, "--json")
    assert code in (1, 2)
    doc = one_document("convert", code, out)
    assert "calibration" in doc["error"] and doc["models"][0]["status"] == "failed"


def test_output_of_child_processes_cannot_break_the_document(tmp_path):
    """A child process writing on file descriptor 1 during a --json run: still one document."""
    import subprocess
    import sys

    code = ("import subprocess, sys\n"
            "import edgeport.cli.convert as c\n"
            "def run(args):\n"
            "    subprocess.run([sys.executable, '-c', 'print(\"tool chatter\")'])\n"
            "    raise RuntimeError('boom')\n"
            "c.run = run\n"
            "c.files = lambda args, run: None\n"   # the stand-in reads no file
            "from edgeport.cli import main\n"
            "sys.exit(main(['convert', 'x.onnx', '--to', 'ort', '--json']))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={**__import__("os").environ, "PYTHONPATH": str(DATA.parents[1])})
    assert p.returncode == 1, p.stderr
    doc = one_document("convert", 1, p.stdout)
    assert "boom" in doc["error"] and "tool chatter" in p.stderr
