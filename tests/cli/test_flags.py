"""Flags are validated at parse time, with one spelling in every command.

Generated from the argparse definitions of every command, so a flag added later is covered:
every bounded number flag refuses the values just outside its bounds, NaN and infinity, and
states its bound in --help; every value flag refuses an empty value and undecodable bytes;
flags shared by several commands have one spelling, one type and one rule.
"""

import argparse

import pytest

from tests.conftest import DATA, run_cli

MODEL = str(DATA / "color_float.tflite")


def commands():
    from edgeport.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _positionals(name):
    """Minimal valid positionals of command `name` (so only the flag under test is wrong)."""
    return {"classify": ["-m", MODEL, "-i", MODEL], "convert": [MODEL, "--to", "ort"],
            "eval": [MODEL, "--images", str(DATA)], "manifest": ["merge", MODEL],
            "toolenv": []}.get(name, [MODEL])


def _flag_actions():
    for cmd, p in commands().items():
        for a in p._actions:
            if a.option_strings and a.help is not argparse.SUPPRESS:
                yield cmd, p, a


def _bounded():
    out = []
    for cmd, _p, a in _flag_actions():
        bounds = getattr(a.type, "bounds", None)
        if bounds:
            out.append((cmd, a.option_strings[-1], bounds, a.type))
    return out


BOUNDED = _bounded()


def test_every_number_flag_is_bounded():
    """No number flag of any command is unbounded above (a count of 10**20 exhausts memory)."""
    loose = [(cmd, a.option_strings[-1]) for cmd, p, a in _flag_actions()
             if a.type in (int,) or getattr(a.type, "__name__", "") in ("positive_int", "non_negative_int")]
    assert not loose, f"number flags without an upper bound: {loose}"
    assert len(BOUNDED) >= 20


def _values_outside(bounds, type_):
    lo, hi = bounds
    if isinstance(lo, int) and isinstance(hi, int):
        return [str(lo - 1), str(hi + 1), "1e30", "nan", "x", str(10 ** 20)]
    return [repr(hi * 10 + 1), "nan", "inf", "-inf", "x"] + ([repr(lo - 1)] if lo > -1e6 else [])


@pytest.mark.parametrize("cmd,flag,bounds,type_", BOUNDED, ids=[f"{c}{f}" for c, f, _, _ in BOUNDED])
def test_out_of_bounds_is_one_line_and_the_bound_is_in_help(capsys, cmd, flag, bounds, type_):
    for value in _values_outside(bounds, type_):
        code, out, err = run_cli(capsys, cmd, *_positionals(cmd), f"{flag}={value}")
        assert code == 2 and len(err.strip().splitlines()) == 1 and flag in err, (value, err)
        assert "internal error" not in err
    code, out, err = run_cli(capsys, cmd, "--help")
    assert type_.rule in " ".join(out.split()), f"{cmd} {flag}: the help does not state '{type_.rule}'"


def _valued():
    out = []
    for cmd, _p, a in _flag_actions():
        if a.nargs == 0 or a.type is not None or a.choices:
            continue
        if isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction,
                          argparse._VersionAction, argparse._CountAction)):
            continue
        out.append((cmd, a.option_strings[-1]))
    return out


VALUED = _valued()


@pytest.mark.parametrize("cmd,flag", VALUED, ids=[f"{c}{f}" for c, f in VALUED])
def test_empty_value_is_refused(capsys, cmd, flag):
    code, out, err = run_cli(capsys, cmd, *_positionals(cmd), f"{flag}=")
    assert code == 2 and "empty value" in err and len(err.strip().splitlines()) == 1, err


def test_the_valued_flags_are_generated():
    names = {f for _, f in VALUED}
    assert {"--shard", "--data", "--output-dir", "--device"} <= names, names
    print(f"{len(VALUED)} value flags, {len(BOUNDED)} number flags")


@pytest.mark.parametrize("argv", [["check", "m\udcff.tflite"], ["check", ""],
                                  ["validate", MODEL, "--report", "r\udcfe.json"]])
def test_empty_or_undecodable_paths_are_one_line(capsys, argv):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "internal error" not in err, err
    assert "UTF-8" in err or "empty value" in err


@pytest.mark.parametrize("flag,values,message", [
    ("--val-range", ["[nan,nan]"], "finite"), ("--val-range", ["[0,inf]"], "finite"),
    ("--val-range", ["[0,1]", "[0,2]"], "twice"), ("--val-range", ["x:[0,1]", "x:[0,2]"], "twice"),
    ("--input-shapes", ["x:[1,2]", "x:[1,3]"], "twice"), ("--input-shapes", ["[1,2]", "[1,2]"], "twice"),
    ("--input-shapes", ["[1,99999999999999]"], "dimension"), ("--arg", ["a=1", "a=2"], "twice")])
def test_duplicate_names_and_non_finite_ranges_are_refused(capsys, flag, values, message):
    code, out, err = run_cli(capsys, "bench", MODEL, flag, *values)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("value", ["1e30", "x", "0", str(10 ** 26)])
def test_limit_overrides_from_the_environment_are_bounded(capsys, monkeypatch, value):
    monkeypatch.setenv("EDGEPORT_MAX_MODEL_BYTES", value)
    code, out, err = run_cli(capsys, "check", MODEL)
    assert code == 2 and "EDGEPORT_MAX_MODEL_BYTES" in err and len(err.strip().splitlines()) == 1, err


# -- one spelling ------------------------------------------------------------------------------
SHARED = ("size", "mean", "std", "data", "samples", "seed", "input_shapes", "val_range", "threads",
          "device", "runtime", "layout", "json", "atol", "rtol", "top_k", "input_shape")


def _rule(a):
    return getattr(a.type, "rule", None) or getattr(a.type, "__name__", None)


def test_shared_flags_have_one_spelling_type_and_rule():
    seen = {}
    for cmd, _p, a in _flag_actions():
        if a.dest not in SHARED:
            continue
        long_names = sorted(o for o in a.option_strings if o.startswith("--") and "_" not in o)
        seen.setdefault(a.dest, []).append((cmd, long_names, _rule(a), a.nargs))
    problems = []
    for dest, uses in seen.items():
        canon = "--" + dest.replace("_", "-")
        for cmd, names, _r, _nargs in uses:
            if canon not in names:
                problems.append(f"{cmd}: {dest} is spelled {names}, not {canon}")
        if len({u[2] for u in uses}) > 1:
            problems.append(f"{dest}: different rules {[(u[0], u[2]) for u in uses]}")
        if len({u[3] for u in uses}) > 1 and dest not in ("threads",):
            problems.append(f"{dest}: different nargs {[(u[0], u[3]) for u in uses]}")
    assert not problems, "\n".join(problems)


def test_every_command_with_the_old_input_shape_has_input_shapes():
    for cmd, p in commands().items():
        flags = {o for a in p._actions for o in a.option_strings}
        if "--input-shape" in flags:
            assert "--input-shapes" in flags, cmd
            old = next(a for a in p._actions if "--input-shape" in a.option_strings)
            assert old.help.startswith("deprecated"), cmd


def test_old_spelling_prints_one_deprecation_line(capsys):
    code, out, err = run_cli(capsys, "check", MODEL, "--input-shape", "1", "16", "16", "3")
    assert code == 0, err
    notes = [line for line in err.splitlines() if "deprecated" in line]
    assert notes == ["note: --input-shape is deprecated, use --input-shapes [1,16,16,3]"], err


def test_input_shapes_reaches_sources_that_need_a_shape():
    from edgeport.cli.args import input_shape

    ns = argparse.Namespace(input_shape=None, input_shapes=["x:[1,3,8,8]"])
    assert input_shape(ns) == (1, 3, 8, 8)
    ns = argparse.Namespace(input_shape=[1, 2], input_shapes=None)
    assert input_shape(ns) == (1, 2)
