"""The Raspberry Pi checks (.ci/pi.sh, .ci/pi_checks.py, the arm64 workflow) and the README's
Pi section stay in step: every combination the README recommends is one the checks install,
and the comparison catches a different top-k or a score more than one quantization step off."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _checks():
    spec = importlib.util.spec_from_file_location("pi_checks", REPO / ".ci" / "pi_checks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def readme_pi_installs():
    text = (REPO / "README.md").read_text()
    section = text[text.index("On a Raspberry Pi or any device"):]
    block = section[section.index("```bash"):]
    block = block[: block.index("```", 7)]
    return [ln.split("#")[0].strip()[len("pip install "):].strip()
            for ln in block.splitlines() if ln.strip().startswith("pip install")]


def _norm(args):
    return " ".join(a.strip("'\"").replace("SRC", ".") for a in args.split())


def test_every_readme_pi_combination_is_checked_on_arm64():
    combos = readme_pi_installs()
    assert len(combos) == 2, combos
    pi_sh = (REPO / ".ci" / "pi.sh").read_text()
    emulated = [_norm(m) for m in re.findall(r'^combo \S+ "(.*)"$', pi_sh, re.M)]
    workflow = (REPO / ".github" / "workflows" / "pi-arm64.yml").read_text()
    native = [_norm(m) for m in re.findall(r'install: "(.*)"', workflow)]
    for c in combos:
        assert _norm(c) in emulated, f"README recommends `pip install {c}`, .ci/pi.sh does not check it"
        assert _norm(c) in native, f"README recommends `pip install {c}`, the arm64 workflow does not check it"
    assert "bash .ci/pi.sh" in (REPO / ".ci" / "run").read_text()
    assert "pi.sh" in (REPO / "README.md").read_text()


def _result(classes, json_out=True):
    if json_out:
        out = json.dumps({"results": [{"image": f"/x/{img}", "classes": [{"label": l, "score": s} for l, s in cs]}
                                      for img, cs in classes.items()]})
        return {"args": ["classify", "--json"], "rc": 0, "stdout": out, "stderr": ""}
    lines = []
    for img, cs in classes.items():
        lines += [f"==> /y/{img} <==", "----INFERENCE TIME----", "1.0ms", "-------RESULTS--------"]
        lines += [f"{l}: {s:.5f}" for l, s in cs]
    return {"args": ["classify"], "rc": 0, "stdout": "\n".join(lines), "stderr": ""}


REF = {"cat.bmp": [("Egyptian cat", 0.74609), ("tabby, tabby cat", 0.10938), ("tiger cat", 0.05469)]}


@pytest.mark.parametrize("json_out", [True, False])
@pytest.mark.parametrize("change,ok", [
    (lambda c: c, True),
    (lambda c: [(c[0][0], c[0][1] + 1 / 256)] + c[1:], True),          # one step: allowed
    (lambda c: [(c[0][0], c[0][1] - 2 / 256)] + c[1:], False),         # two steps
    (lambda c: [c[1], c[0], c[2]], False),                               # order swapped
    (lambda c: c[:2] + [("lynx", 0.05469)], False),                      # another class
    (lambda c: c[:2], False),                                            # one missing
])
def test_compare_catches_differences(tmp_path, capsys, json_out, change, ok):
    m = _checks()
    ref = {"classify_json_coral": _result(REF, json_out)}
    res = {"classify_json_coral": _result({k: change(v) for k, v in REF.items()}, json_out)}
    (tmp_path / "r.json").write_text(json.dumps(ref))
    (tmp_path / "x.json").write_text(json.dumps(res))
    rc = m.main(["compare", str(tmp_path / "r.json"), str(tmp_path / "x.json"), "--label", "t"])
    out = capsys.readouterr().out
    assert (rc == 0) == ok, out
    assert out.strip().splitlines()[-1] == f"pi[t]: {1 if ok else 0} passed, {0 if ok else 1} failed"


def test_compare_reports_a_crash(tmp_path, capsys):
    m = _checks()
    ref = {"bench": {"args": ["bench"], "rc": 0, "stdout": '{"models": [{"x": 1}]}', "stderr": ""}}
    res = {"bench": {"args": ["bench"], "rc": -11, "stdout": "", "stderr": "Segmentation fault"}}
    (tmp_path / "r.json").write_text(json.dumps(ref))
    (tmp_path / "x.json").write_text(json.dumps(res))
    assert m.main(["compare", str(tmp_path / "r.json"), str(tmp_path / "x.json"), "--label", "t"]) == 1
    assert "exit -11" in capsys.readouterr().out


@pytest.mark.parametrize("target, expected", [
    ("hellomod.cli:main", "main ran"),
    ("hellomod.cli:group.run", "group.run ran"),       # an attribute path, as pip allows
    ("hellomod.cli:main [extra]", "main ran"),          # an extra marker is not part of the call
])
def test_console_scripts_written_for_the_roots_python(tmp_path, target, expected):
    """pip --target on the host writes console scripts for the host's python; .ci/pi.sh writes
    them again from each package's entry_points.txt, for the virtualenv's python in the root."""
    import subprocess
    import sys

    m = _checks()
    site = tmp_path / "root" / "venv-x" / "lib" / "python3.11" / "site-packages"
    (site / "hellomod").mkdir(parents=True)
    (site / "hellomod" / "__init__.py").write_text("")
    (site / "hellomod" / "cli.py").write_text(
        "import sys\n"
        "def main():\n    print('main ran', sys.argv[1:]); return 3\n"
        "class group:\n    @staticmethod\n    def run():\n        print('group.run ran', sys.argv[1:]); return 3\n")
    (site / "hello-1.0.dist-info").mkdir()
    (site / "hello-1.0.dist-info" / "entry_points.txt").write_text(
        f"[console_scripts]\nhello = {target}\n\n[gui_scripts]\nhello-gui = hellomod.cli:main\n")
    (tmp_path / "root" / "venv-x" / "bin").mkdir()
    assert m.scripts(str(tmp_path / "root"), "/venv-x") == ["hello", "hello-gui"]
    script = tmp_path / "root" / "venv-x" / "bin" / "hello"
    assert script.read_text().splitlines()[0] == "#!/venv-x/bin/python"   # the root's path
    assert script.stat().st_mode & 0o111
    assert (tmp_path / "root" / "venv-x" / "bin" / "hello-gui").read_text().splitlines()[0] == "#!/venv-x/bin/python"
    p = subprocess.run([sys.executable, str(script), "a", "b"], capture_output=True, text=True,
                       env={"PYTHONPATH": str(site)})
    assert p.returncode == 3, p.stderr
    assert p.stdout.strip() == f"{expected} ['a', 'b']"
