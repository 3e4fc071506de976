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
