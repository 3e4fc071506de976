"""converters/toolenv: isolated tool environments, tested with a fake tool (no network, fast).

The fake tool's "pip install" is replaced by a step that writes a shell script `fakesim`
into the environment's bin folder; everything else is real: the venv is created, the
manifest written, reused, rebuilt, removed, and the tool runs as a subprocess.
"""

import json
import os
import stat

import pytest

from converters import toolenv
from edge.errors import EdgeportError, InputError
from tests.conftest import run_cli

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the fake tool is a POSIX shell script")

FAKE_SCRIPT = """#!/bin/sh
echo "path0=${PATH%%:*}"
echo "cwd=$(pwd)"
echo "args=$*"
echo "pythonpath=${PYTHONPATH:-unset}"
if [ -n "$FAKE_SLEEP" ]; then sleep "$FAKE_SLEEP"; fi
if [ -n "$FAKE_EXIT" ]; then echo "working..."; echo "ERROR: boom in layer 7"; echo "done"; exit "$FAKE_EXIT"; fi
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A tool 'fake' whose install writes bin/fakesim; returns a dict of call counters."""
    monkeypatch.setenv("EDGEPORT_TOOLENV_DIR", str(tmp_path / "envs"))
    monkeypatch.delenv("EDGEPORT_TOOLENV_PYTHON", raising=False)
    tool = toolenv.Tool("fake", "fakepkg==1.0\n", ("fakesim",), "a fake converter")
    monkeypatch.setitem(toolenv.TOOLS, "fake", tool)
    calls = {"pip": 0, "fail": False}
    real_create = toolenv._create_venv

    def create(env, with_pip):          # no ensurepip: seconds saved, same folder layout
        real_create(env, False)

    def pip_install(env, req_file, log):
        calls["pip"] += 1
        with open(req_file) as f:
            assert f.read() == tool.requirements
        if calls["fail"]:
            log.write("Collecting fakepkg==1.0\nERROR: No matching distribution found for fakepkg==1.0\n")
            return 1
        script = os.path.join(env.bin, "fakesim")
        with open(script, "w") as f:
            f.write(FAKE_SCRIPT)
        os.chmod(script, os.stat(script).st_mode | stat.S_IEXEC)
        return 0

    monkeypatch.setattr(toolenv, "_create_venv", create)
    monkeypatch.setattr(toolenv, "_pip_install", pip_install)
    monkeypatch.setattr(toolenv, "_freeze", lambda env: ["fakepkg==1.0"])
    return calls


def test_root_follows_env_var_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEPORT_TOOLENV_DIR", str(tmp_path / "x"))
    assert toolenv.root_dir() == str(tmp_path / "x")
    monkeypatch.delenv("EDGEPORT_TOOLENV_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert toolenv.root_dir() == str(tmp_path / "cache" / "edgeport" / "toolenv")


def test_env_folder_name_changes_with_pins_and_python():
    a = toolenv.Tool("t", "x==1\n", ("t",))
    b = toolenv.Tool("t", "x==2\n", ("t",))
    assert toolenv.requirements_hash(a, "3.11") == toolenv.requirements_hash(a, "3.11")
    assert toolenv.requirements_hash(a, "3.11") != toolenv.requirements_hash(b, "3.11")
    assert toolenv.requirements_hash(a, "3.11") != toolenv.requirements_hash(a, "3.12")


def test_onnx2tf_pins_are_exact():
    pins = toolenv.info("onnx2tf")["pins"]
    assert "onnx2tf==1.29.24" in pins and "tensorflow==2.19.0" in pins and "numpy==1.26.4" in pins
    assert all("==" in p for p in pins), [p for p in pins if "==" not in p]


def test_built_once_then_reused(fake):
    env = toolenv.ensure("fake")
    assert env.ready and fake["pip"] == 1
    assert os.path.basename(env.path).startswith("fake-")
    again = toolenv.ensure("fake")
    assert again.path == env.path and fake["pip"] == 1          # reused, not reinstalled
    m = json.load(open(os.path.join(env.path, toolenv.MANIFEST)))
    assert m["packages"] == ["fakepkg==1.0"] and m["tool"] == "fake"
    toolenv.ensure("fake", rebuild=True)
    assert fake["pip"] == 2


def test_interrupted_build_is_redone(fake):
    env = toolenv.env_for("fake")
    os.makedirs(os.path.join(env.bin))                        # a folder without a manifest
    open(os.path.join(env.path, "half-installed"), "w").close()
    assert not env.ready
    toolenv.ensure("fake")
    assert env.ready and fake["pip"] == 1
    assert not os.path.exists(os.path.join(env.path, "half-installed"))


def test_failed_install_says_why_and_leaves_nothing(fake):
    fake["fail"] = True
    with pytest.raises(EdgeportError) as e:
        toolenv.ensure("fake")
    msg = str(e.value)
    assert "No matching distribution found for fakepkg==1.0" in msg
    assert "edgeport toolenv fake --rebuild" in msg
    assert not os.path.exists(toolenv.env_for("fake").path)


def test_run_puts_env_first_on_path_in_cwd(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere/edgeport")
    env = toolenv.ensure("fake")
    work = tmp_path / "work"
    work.mkdir()
    log = tmp_path / "fake.log"
    out = toolenv.run(env, ["-i", "m.onnx", "-o", "out"], cwd=str(work), timeout=120, log_path=str(log))
    assert f"path0={env.bin}" in out
    assert f"cwd={work}" in out
    assert "args=-i m.onnx -o out" in out
    assert "pythonpath=unset" in out                 # edgeport's own path does not leak in
    assert log.read_text() == out


def test_run_failure_gives_the_tools_error_line(fake, tmp_path, monkeypatch):
    env = toolenv.ensure("fake")
    monkeypatch.setenv("FAKE_EXIT", "3")
    log = tmp_path / "fake.log"
    with pytest.raises(EdgeportError) as e:
        toolenv.run(env, [], cwd=str(tmp_path), timeout=120, log_path=str(log))
    assert "fake failed (exit 3): ERROR: boom in layer 7" in str(e.value)
    assert str(log) in str(e.value) and "working..." in log.read_text()


def test_run_timeout(fake, tmp_path, monkeypatch):
    env = toolenv.ensure("fake")
    monkeypatch.setenv("FAKE_SLEEP", "60")
    with pytest.raises(EdgeportError, match="did not finish within 1 s"):
        toolenv.run(env, [], cwd=str(tmp_path), timeout=1)


def test_missing_executable(fake, tmp_path):
    env = toolenv.ensure("fake")
    os.remove(os.path.join(env.bin, "fakesim"))
    with pytest.raises(EdgeportError, match="--rebuild"):
        toolenv.run(env, [], cwd=str(tmp_path), timeout=60)


def test_unknown_tool():
    with pytest.raises(InputError, match="known: .*onnx2tf"):
        toolenv.get_tool("nope")


def test_cli_shows_builds_and_removes(fake, capsys):
    code, out, _ = run_cli(capsys, "toolenv", "fake", "--json")
    d = json.loads(out)["toolenvs"][0]
    assert code == 0 and d["ready"] is False and d["folder"].startswith(toolenv.root_dir())
    assert d["rebuild"] == "edgeport toolenv fake --rebuild"
    code, out, err = run_cli(capsys, "toolenv", "fake", "--build")
    assert code == 0 and "status:       ready" in out and "installed:    fakepkg==1.0" in out
    assert "creating the fake environment" in err
    code, out, _ = run_cli(capsys, "toolenv", "fake", "--remove")
    assert code == 0 and out.startswith("removed ") and "not built" in out
    code, _, err = run_cli(capsys, "toolenv", "nope")
    assert code == 2 and "no tool environment named 'nope'" in err
