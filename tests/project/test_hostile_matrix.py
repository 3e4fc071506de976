"""The hostile matrix, generated from the argument parsers (issue: safe by construction).

Every subcommand's argparse definition (edgeport.cli.build_parser) is walked, and every flag
gets hostile values by its kind, so a flag added tomorrow is covered without anyone adding a
case:

  path flags    every flag taking one string, unless TEXT_FLAGS names it (a format list, a
                device spec, a name...), x an input of the same run, a symbolic link and a
                hard link to one, a folder, a FIFO, a device node, a missing parent, "",
                a non-UTF-8 name, a name with a newline, a name with ESC;
  number flags  every flag whose type is a number (args.py's bounded types, or the number
                specs NUMBER_TEXT names) x 0, -1, nan, inf, 1e30, "", x.

Whether a flag is an output is not listed either: it is what the command declares in its
`files(args, run)` (edge/run.py) for that flag.

Each case runs the command in-process on tiny committed models (tests/data/color_*.tflite)
and asserts:
  - the exit status the rule below expects, and on exit 2 one `error:` line, the last one;
  - every file that was there before (models, sidecars, labels, images, manifests) is
    byte-identical after, unless it is a declared output;
  - nothing new outside the declared outputs (no stray file, no temp left);
  - no traceback, no "internal error", and no raw ESC from a hostile name in the output;
  - with --json (number cases, where the command has it), stdout is empty or one JSON document.

The rule (what is "legitimate"):
  - an output given an input of the run (by name, link or hard link), a FIFO, a device, a
    folder (for a file output), "" -> exit 2. A missing parent, a non-UTF-8 name or a name
    with a newline or ESC is a legitimate output name: the command's ordinary result.
  - an input given a FIFO, a device, a missing parent, "" -> exit 2; any other file is judged
    by the command (0, 1 or 2), never by a crash.
  - a number the flag's own rule (its type) accepts -> the command's ordinary result
    (0, 1 or 2, judged by the command); one it refuses -> exit 2 at parse time.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import stat

import pytest

from tests.conftest import DATA

# String flags that are not paths (a new string flag is a path until named here).
TEXT_FLAGS = {
    "--to": "a list of formats", "--shard": "K/N", "--torch-model": "a Python import (MODULE:FACTORY)",
    "--coreml-target": "a deployment target name", "--author": "text", "--license": "text",
    "--description": "text", "--model-version": "text", "--container-runtime": "an OCI runtime name",
    "--container-ulimit": "NAME=SOFT:HARD", "--compiler-image": "an image name",
    "--input-shapes": "shape specs", "--val-range": "range specs", "--arg": "NAME=VALUE", "--fix": "NAME=VALUE",
    "--device": "a device spec", "--check-stat": "statistic names", "toolenv tool": "a tool name",
}
# String flags whose values are numbers parsed after argparse: the type that judges them.
NUMBER_TEXT = {"--atol": "non_negative_float", "--rtol": "non_negative_float"}
NUMBERS = ["0", "-1", "nan", "inf", "1e30", "", "x"]
PATH_KINDS = ["input", "symlink", "hardlink", "folder", "fifo", "device", "missing-parent", "empty",
              "non-utf8", "newline", "esc"]
COMMANDS_WITHOUT_CASES = {"toolenv": "its only value is a tool name; its flags build or remove "
                                     "environments (network), which no unit test runs"}


# -- the base invocation of each command: fast, and exit 0 on the fixture below ---------------------
def base(command, f):
    """(positionals {dest: [values]} in order, options {flag: [values]}, switches) of `command`."""
    return {
        "classify": ({}, {"-m": [f["a"]], "-i": [f["img"]], "-c": ["1"]}, []),
        "bench": ({"models": [f["a"]]}, {"--runs": ["1"], "--warmup": ["0"]}, []),
        "convert": ({"source": [f["a"]]}, {"--to": ["onnx"], "-o": [f["out"]]}, ["--no-validate", "--quiet"]),
        "inspect": ({"model": [f["a"]]}, {}, []),
        "validate": ({"source": [f["a"]], "converted": [f["b"]]}, {"--samples": ["1"]}, []),
        "check": ({"model": [f["a"]]}, {}, []),
        "eval": ({"models": [f["a"]]}, {"--images": [f["eval"]], "--labels": [f["labels"]]}, []),
        "manifest merge": ({"manifests": [f["m1"]]}, {}, []),
    }[command]


def _subcommands():
    from edgeport.cli import build_parser

    def walk(parser, prefix=()):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for a in subs:
            for name, sp in a.choices.items():
                yield from walk(sp, prefix + (name,))
        if prefix and not subs:
            yield " ".join(prefix), parser

    return list(walk(build_parser()))


def _kind(command, action):
    """'path', 'number' (with its type name), or None (switches, choices, text)."""
    if action.nargs == 0 or action.choices is not None or isinstance(action, argparse._HelpAction):
        return None
    name = action.option_strings[-1] if action.option_strings else f"{command} {action.dest}"
    if action.option_strings and any(o in NUMBER_TEXT for o in action.option_strings):
        return "number"
    if action.type is None:
        if name in TEXT_FLAGS or any(o in TEXT_FLAGS for o in action.option_strings):
            return None
        return "path"
    if action.type in (int, float) or hasattr(action.type, "rule"):
        return "number"
    return None


def _flags():
    out = []
    for command, parser in _subcommands():
        if command in COMMANDS_WITHOUT_CASES:
            continue
        for a in parser._actions:
            kind = _kind(command, a)
            if kind:
                out.append((command, a, kind))
    return out


def _cases():
    cases = []
    for command, a, kind in _flags():
        flag = a.option_strings[0] if a.option_strings else a.dest
        for v in (PATH_KINDS if kind == "path" else NUMBERS):
            cases.append(pytest.param(command, flag, kind, v, id=f"{command}-{flag}-{v or 'empty'}"))
    return cases


CASES = _cases()
print(f"hostile matrix: {len(CASES)} cases")


def test_the_matrix_counts_its_cases(capsys):
    with capsys.disabled():
        print(f"\nhostile matrix: {len(CASES)} generated cases "
              f"({len(_flags())} flags of {len(_subcommands()) - len(COMMANDS_WITHOUT_CASES)} commands)")
    assert len(CASES) > 300


def test_every_number_flag_has_a_bounded_type():
    """A number flag is bounded at parse time: its type is one of args.py's (with a rule)."""
    for command, a, kind in _flags():
        if kind == "number" and a.type is not None:
            assert hasattr(a.type, "rule"), f"{command} {a.option_strings}: type {a.type} has no bound"


# -- the fixture folder ----------------------------------------------------------------------------
@pytest.fixture
def world(tmp_path):
    from PIL import Image

    f = {"root": tmp_path}
    f["a"], f["b"] = tmp_path / "a.tflite", tmp_path / "b.tflite"
    shutil.copy(DATA / "color_float.tflite", f["a"])
    shutil.copy(DATA / "color_float.tflite", f["b"])
    (tmp_path / "a.tflite.edgeport.json").write_text('{"labels": ["red", "green", "blue", "gray"]}\n')
    f["img"] = tmp_path / "red.png"
    Image.new("RGB", (16, 16), (230, 20, 20)).save(f["img"])
    f["eval"] = tmp_path / "val"
    for i, (name, rgb) in enumerate({"red": (230, 20, 20), "green": (20, 230, 20)}.items()):
        (f["eval"] / name).mkdir(parents=True)
        Image.new("RGB", (16, 16), rgb).save(f["eval"] / name / f"{i}.png")
    f["labels"] = tmp_path / "labels.txt"
    f["labels"].write_text("red\ngreen\nblue\ngray\n")
    f["m1"] = tmp_path / "m1.json"
    f["m1"].write_text(json.dumps({"edgeport_manifest": 1}) + "\n")
    f["out"] = tmp_path / "out"
    return f


def _value(kind, f, given, tmp):
    """The hostile path of `kind` (made in `tmp`); `given` is the flag's base value, if any."""
    like = given or f["a"]
    if kind == "input":
        return str(f["a"])
    if kind == "symlink":
        os.symlink(f["a"], tmp / "link.x")
        return str(tmp / "link.x")
    if kind == "hardlink":
        os.link(f["a"], tmp / "hard.x")
        return str(tmp / "hard.x")
    if kind == "folder":
        (tmp / "folder.x").mkdir()
        return str(tmp / "folder.x")
    if kind == "fifo":
        os.mkfifo(tmp / "fifo.x")
        return str(tmp / "fifo.x")
    if kind == "device":
        try:
            os.mknod(tmp / "dev.x", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a /dev/null of our own
            return str(tmp / "dev.x")
        except (PermissionError, OSError):
            pytest.skip("cannot make a device node here (needs CAP_MKNOD)")
    if kind == "missing-parent":
        return str(tmp / "no" / "such" / "x.out")
    if kind == "empty":
        return ""
    name = {"non-utf8": os.fsdecode(b"caf\xe9\xff.x"), "newline": "new\nline.x", "esc": "esc\x1b[31m.x"}[kind]
    if os.path.exists(like) and os.path.isfile(like):
        shutil.copy(like, tmp / name)
    elif os.path.isdir(like):
        shutil.copytree(like, tmp / name)
    return str(tmp / name)


def _snapshot(root):
    out = {}
    for r, dirs, names in os.walk(root):
        for n in dirs + names:
            p = os.path.join(r, n)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    out[p] = hashlib.sha256(fh.read()).hexdigest()
            else:
                out[p] = stat.S_IFMT(st.st_mode)
    return out


def _declared(argv):
    """(outputs, trees) the command declares for `argv` (nothing when it does not parse)."""
    import contextlib
    import io

    from edge.run import Run
    from edgeport.cli import build_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(argv)
            run = Run()
            args._files(args, run)
    except (SystemExit, Exception):
        return [], []
    return [os.path.realpath(p) for p, _, _ in run.outputs], [t for t, _ in run.trees]


def _is_output(command, flag, f, tmp):
    probe = str(tmp / "probe.out")
    argv = _argv(command, flag, probe, f)
    outs, trees = _declared(argv)
    real = os.path.realpath(probe)
    return real in outs or real in trees


def _argv(command, flag, value, f, json_flag=False):
    pos, opts, switches = base(command, f)
    pos, opts = {k: list(v) for k, v in pos.items()}, {k: list(v) for k, v in opts.items()}
    if flag.startswith("-"):
        aliases = {"-m": "--model", "-i": "--input", "-o": "--output-dir", "-c": "--count"}
        for k in list(opts):
            if k == flag or aliases.get(k) == flag:
                del opts[k]
        opts[flag] = [value]
    else:
        pos[flag] = [value]
    argv = command.split()
    for vals in pos.values():
        argv += [str(v) for v in vals]
    for k, vals in opts.items():
        argv += [k] + [str(v) for v in vals]
    argv += switches
    if json_flag:
        argv.append("--json")
    return argv


def _has_json(command):
    return any("--json" in a.option_strings for c, p in _subcommands() if c == command for a in p._actions)


def _number_ok(command, flag, text):
    """Does the flag's own rule accept `text`?"""
    from edgeport.cli import args as A

    for c, p in _subcommands():
        if c != command:
            continue
        for a in p._actions:
            if flag in a.option_strings or flag == a.dest:
                t = getattr(A, NUMBER_TEXT[flag]) if flag in NUMBER_TEXT else a.type
                try:
                    t(text)
                    return True
                except (argparse.ArgumentTypeError, ValueError, TypeError):
                    return False
    raise AssertionError(flag)


class _Hang(Exception):
    pass


@pytest.mark.parametrize("command,flag,kind,value", CASES)
def test_hostile(world, tmp_path, capsys, command, flag, kind, value):
    from edgeport.cli import main

    tmp = tmp_path / "hostile"
    tmp.mkdir()
    f = world
    json_flag = kind == "number" and _has_json(command)
    if kind == "path":
        pos, opts, _ = base(command, f)
        given = (pos.get(flag) or opts.get(flag) or [None])[0]
        output = _is_output(command, flag, f, tmp)
        hostile = _value(value, f, given, tmp)
    else:
        output = False
        hostile = value
    argv = _argv(command, flag, hostile, f, json_flag)
    outs, trees = _declared(argv)
    before = _snapshot(f["root"])

    def alarm(*_):
        raise _Hang(f"{command} {flag}={value!r} hung")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(120)
    try:
        code = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    out, err = capsys.readouterr()
    shown = f"{argv}\nexit {code}\nstdout: {out[-600:]}\nstderr: {err[-600:]}"

    # no crash, and no raw terminal escape from a file name (the one sanitizer, edgeport/cli/output.py)
    assert "Traceback" not in out + err and "internal error" not in out + err, shown
    assert "\x1b" not in out + err, shown
    # the exit status the rule expects
    if kind == "number":
        expect = {0, 1, 2} if _number_ok(command, flag, value) else {2}
    elif value in ("fifo", "device", "empty", "non-utf8"):
        expect = {2}
    elif output and value in ("input", "symlink", "hardlink"):
        expect = {2}
    elif output and value == "folder":
        expect = {0, 1, 2} if os.path.realpath(hostile) in trees else {2}
    elif not output and value == "missing-parent":
        expect = {2}
    else:
        expect = {0, 1, 2}
    assert code in expect, shown
    if code == 2:
        lines = err.strip().splitlines()
        assert lines and lines[-1].startswith("error: "), shown
        assert sum(ln.startswith("error: ") for ln in lines) == 1, shown
    if json_flag and out.strip():
        json.loads(out)  # one valid document
    # inputs untouched, nothing written outside the declared outputs
    after = _snapshot(f["root"])

    def declared(p):
        real = os.path.realpath(p)
        return real in outs or any(real == t or real.startswith(t + os.sep) for t in trees)

    for p, h in before.items():
        if not declared(p):
            assert after.get(p) == h, f"{p} changed or vanished\n{shown}"
    for p in set(after) - set(before):  # a new folder only as the parent of a declared output
        assert declared(p) or any(declared(q) for q in after if q.startswith(p + os.sep)), \
            f"{p} written but not declared\n{shown}"
        assert ".tmp-" not in os.path.basename(p), f"temp left: {p}\n{shown}"
