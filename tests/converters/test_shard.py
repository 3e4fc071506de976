"""`convert DIR --shard K/N` and `manifest merge`: every model in exactly one shard,
shares stable when models are added, reruns skip finished work, merge reports failures and
missing, repeated or inconsistent shards."""

import hashlib
import json
import os
import shutil

import pytest

from converters.manifest import fingerprint, manifest_name, merge_manifests, parse_shard, shard_of, summary_table
from edge.errors import InputError
from tests.conftest import DATA, run_cli


def tiny_onnx(path, seed):
    """A 4 -> 3 MatMul ONNX model with seeded weights (distinct bytes per seed), converts in ms."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((4, 3)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shard_all(capsys, folder, n, out_root, *extra):
    """Run every shard k/n into its own output folder (as N runners would); returns
    ({k: exit code}, {k: manifest dict}, [manifest paths])."""
    codes, manifests, paths = {}, {}, []
    for k in range(1, n + 1):
        out = out_root / f"shard{k}"
        code, stdout, err = run_cli(capsys, "convert", folder, "--shard", f"{k}/{n}", "-o", out,
                                    "--quiet", *extra)
        assert "internal error" not in err and "Traceback" not in err, err
        path = out / manifest_name(k, n)
        assert path.is_file(), (stdout, err)
        codes[k], manifests[k] = code, json.loads(path.read_text())
        paths.append(path)
    return codes, manifests, paths


# -- the arithmetic ----------------------------------------------------------------------------
def test_parse_shard_is_one_based():
    assert parse_shard("1/4") == (1, 4) and parse_shard(" 4 / 4 ") == (4, 4) and parse_shard("1/1") == (1, 1)
    for bad in ("0/4", "5/4", "4", "a/b", "1/0", "-1/3", ""):
        with pytest.raises(InputError):
            parse_shard(bad)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_every_hash_in_exactly_one_shard(n):
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(500)]
    shares = {k: {h for h in hashes if shard_of(h, n) == k} for k in range(1, n + 1)}
    assert sum(len(s) for s in shares.values()) == len(hashes)   # disjoint ...
    assert set().union(*shares.values()) == set(hashes)           # ... and complete
    # and roughly even: no shard holds more than twice its fair share of 500
    assert max(len(s) for s in shares.values()) <= 2 * len(hashes) / n


def test_fingerprint_ignores_order():
    assert fingerprint(["b", "a"]) == fingerprint(["a", "b"]) != fingerprint(["a"])


# -- convert --shard ---------------------------------------------------------------------------
@pytest.fixture()
def zoo(tmp_path):
    folder = tmp_path / "zoo"
    folder.mkdir()
    for i in range(7):
        tiny_onnx(folder / f"net{i}.onnx", i)
    (folder / "notes.txt").write_text("not a model")
    return folder


@pytest.mark.parametrize("n", [1, 3])
def test_convert_shards_cover_the_folder_once(zoo, tmp_path, capsys, n):
    codes, manifests, paths = shard_all(capsys, zoo, n, tmp_path / f"out{n}", "--to", "ort")
    assert set(codes.values()) == {0}
    names = [m["model"] for d in manifests.values() for m in d["models"]]
    assert sorted(names) == sorted(p.name for p in zoo.glob("*.onnx"))  # every model exactly once
    for k, d in manifests.items():
        assert d["shard"] == {"k": k, "n": n} and d["folder_models"] == 7
        for m in d["models"]:
            assert shard_of(m["sha256"], n) == k and m["sha256"] == sha(zoo / m["model"])
            assert m["outcome"] == "validated" and m["targets"] == ["ort"] and m["time_ms"] > 0
            (a,) = m["artefacts"]
            out = tmp_path / f"out{n}" / f"shard{k}" / (m["model"][:-5] + ".ort")
            assert a["model"] == str(out) and a["format"] == "ort" and a["status"] == "converted"
            assert a["size_bytes"] == out.stat().st_size and a["sha256"] == sha(out)
            assert a["validation"]["passed"] is True
        # only this shard's models were converted into its folder
        assert sorted(p.name for p in (tmp_path / f"out{n}" / f"shard{k}").glob("*.ort")) == \
            sorted(m["model"][:-5] + ".ort" for m in d["models"])
    code, out, err = run_cli(capsys, "manifest", "merge", *paths, "-o", tmp_path / "merged.json")
    assert code == 0, out + err
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["passed"] and merged["counts"] == {"converted": 0, "validated": 7, "refused": 0, "failed": 0}
    rows = [line.split() for line in out.splitlines()]
    assert ["shard", "converted", "validated", "refused", "failed", "wall", "s"] in rows
    assert ["total", "0", "7", "0", "0"] in rows
    assert "complete, every model converted" in out


def test_shares_stable_when_models_are_added(zoo, tmp_path, capsys):
    n = 3
    _, before, _ = shard_all(capsys, zoo, n, tmp_path / "a", "--to", "tflite-int8")
    for i in range(7, 12):
        tiny_onnx(zoo / f"net{i}.onnx", i)
    shutil.copy(zoo / "net0.onnx", zoo / "copy_of_net0.onnx")   # same bytes: same shard
    _, after, _ = shard_all(capsys, zoo, n, tmp_path / "b", "--to", "tflite-int8")
    where = lambda ms: {m["model"]: k for k, d in ms.items() for m in d["models"]}  # noqa: E731
    old, new = where(before), where(after)
    assert len(old) == 7 and len(new) == 13
    assert {name: new[name] for name in old} == old     # no old model moved
    assert new["copy_of_net0.onnx"] == new["net0.onnx"]


def test_refused_models_are_recorded_with_the_reason(tmp_path, capsys):
    folder = tmp_path / "tfl"
    folder.mkdir()
    for name in ("float", "nchw"):
        shutil.copy(DATA / f"color_{name}.tflite", folder / f"color_{name}.tflite")
    codes, manifests, paths = shard_all(capsys, folder, 2, tmp_path / "out", "--to", "tflite-int8")
    models = [m for d in manifests.values() for m in d["models"]]
    assert len(models) == 2 and {m["outcome"] for m in models} == {"refused"}
    assert all("--calibration" in m["reason"] for m in models)  # float TFLite -> int8 needs photos
    assert max(codes.values()) == 2          # the shard holding a refused model exits 2
    code, out, err = run_cli(capsys, "manifest", "merge", *paths)
    assert code == 1
    assert "refused: color_float.tflite" in out and "refused: color_nchw.tflite" in out
    assert "2 models refused or failed" in out


def test_rerun_of_one_shard_skips_what_is_done(zoo, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("convert", zoo, "--to", "ort", "--shard", "2/2", "-o", out, "--quiet", "--json")
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    first = json.loads(stdout)
    assert first["manifest"] == str(out / manifest_name(2, 2))
    mine = [os.path.basename(r["model"]) for r in first["models"]]
    assert mine and all(r["status"] == "converted" for r in first["models"])
    # the runner died half way: one artefact lost; the rerun converts only that one
    lost = out / (mine[0][:-5] + ".ort")
    lost.unlink()
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    again = {os.path.basename(r["model"]): r["status"] for r in json.loads(stdout)["models"]}
    assert again == {name: ("converted" if name == mine[0] else "skipped") for name in mine}
    d = json.loads((out / manifest_name(2, 2)).read_text())
    assert {m["model"]: m["skipped"] for m in d["models"]} == {n: n != mine[0] for n in mine}
    # skipped models still list their artefacts and keep their outcome
    assert all(m["outcome"] == "validated" and len(m["artefacts"]) == 1 for m in d["models"])
    assert lost.is_file()


def test_shard_needs_a_folder(zoo, tmp_path, capsys):
    code, out, err = run_cli(capsys, "convert", zoo / "net0.onnx", "--to", "ort", "--shard", "1/2",
                             "-o", tmp_path)
    assert code == 2 and "--shard needs a folder" in err
    code, out, err = run_cli(capsys, "convert", zoo, "--to", "ort", "--shard", "3/2", "-o", tmp_path)
    assert code == 2 and "K must be between 1 and N" in err
    assert not list(tmp_path.glob("*.ort"))


# -- merge -------------------------------------------------------------------------------------
def fake_manifest(path, k, n, models, folder_models=None, targets=("onnx",), fp="f"):
    """A shard manifest as `convert --shard` writes it (`models`: [(name, sha, outcome)])."""
    entries = [{"model": name, "sha256": h, "outcome": outcome, "reason": None if outcome in
                ("converted", "validated") else "boom", "artefacts": [], "time_ms": 1.0}
               for name, h, outcome in models]
    counts = {o: sum(1 for e in entries if e["outcome"] == o)
              for o in ("converted", "validated", "refused", "failed")}
    path.write_text(json.dumps({"schema": "edgeport-manifest/1", "shard": {"k": k, "n": n},
                                "folder_models": folder_models, "folder_fingerprint": fp,
                                "targets": list(targets), "counts": counts, "wall_ms": 10.0,
                                "models": entries}))
    return path


def hashes_for(n, count=12):
    """{k: [sha, ...]} of `count` hashes, grouped by the shard they fall in."""
    out = {k: [] for k in range(1, n + 1)}
    for i in range(count):
        h = hashlib.sha256(f"model{i}".encode()).hexdigest()
        out[shard_of(h, n)].append(h)
    return out


def three_shards(tmp_path, outcome_of=lambda name: "validated"):
    by = hashes_for(3)
    total = sum(len(v) for v in by.values())
    return [fake_manifest(tmp_path / f"s{k}.json", k, 3,
                          [(f"m{k}_{i}.onnx", h, outcome_of(f"m{k}_{i}.onnx")) for i, h in enumerate(hs)],
                          folder_models=total) for k, hs in by.items()]


def test_merge_complete(tmp_path):
    merged = merge_manifests(three_shards(tmp_path))
    assert merged["passed"] and merged["problems"] == [] and merged["missing_shards"] == []
    assert merged["counts"]["validated"] == 12 and len(merged["models"]) == 12


def test_merge_reports_failures(tmp_path, capsys):
    paths = three_shards(tmp_path, lambda name: "failed" if name == "m2_0.onnx" else "validated")
    merged = merge_manifests(paths)
    assert not merged["passed"] and merged["problems"] == [] and merged["failed_shards"] == [2]
    assert merged["counts"]["failed"] == 1
    assert "failed: m2_0.onnx (shard 2): boom" in summary_table(merged)
    code, out, err = run_cli(capsys, "manifest", "merge", *paths, "--json")
    assert code == 1 and json.loads(out)["counts"]["failed"] == 1


def test_merge_reports_a_missing_shard(tmp_path, capsys):
    paths = three_shards(tmp_path)
    code, out, err = run_cli(capsys, "manifest", "merge", paths[0], paths[2])
    assert code == 1
    assert "missing shard 2/3" in out and "MISSING" in out


def test_merge_rejects_repeated_and_misplaced(tmp_path):
    paths = three_shards(tmp_path)
    merged = merge_manifests(paths + [paths[1]])
    assert any("shard 2/3 given twice" in p for p in merged["problems"])
    # the same model listed by two shards
    d1 = json.loads(paths[0].read_text())
    d2 = json.loads(paths[1].read_text())
    d2["models"].append(dict(d1["models"][0]))
    # and a model whose hash belongs to shard 1, listed by shard 2 (a stale or edited manifest)
    d2["models"].append(dict(d1["models"][1], model="stray.onnx"))
    paths[1].write_text(json.dumps(d2))
    problems = merge_manifests(paths)["problems"]
    assert any(f"{d1['models'][0]['model']} appears in two shards: 1/3 and 2/3" in p for p in problems)
    assert any("stray.onnx is in shard 2/3 but its hash puts it in shard 1/3" in p for p in problems)


def test_merge_rejects_mixed_folders_counts_and_targets(tmp_path):
    by = hashes_for(2)
    a = fake_manifest(tmp_path / "a.json", 1, 2, [("x.onnx", by[1][0], "validated")], fp="one")
    b = fake_manifest(tmp_path / "b.json", 2, 2, [("y.onnx", by[2][0], "validated")], fp="two",
                      targets=("ort",))
    problems = merge_manifests([a, b])["problems"]
    assert any("different versions of the model folder" in p for p in problems)
    assert any("different targets" in p for p in problems)
    c = fake_manifest(tmp_path / "c.json", 1, 3, [], fp="one")
    assert any("different shard counts" in p for p in merge_manifests([a, c])["problems"])
    # a folder of 5 models whose shards list 2
    d = fake_manifest(tmp_path / "d.json", 1, 2, [("x.onnx", by[1][0], "validated")], folder_models=5)
    e = fake_manifest(tmp_path / "e.json", 2, 2, [("y.onnx", by[2][0], "validated")], folder_models=5)
    assert any("holds 5 models but the shards list 2" in p for p in merge_manifests([d, e])["problems"])


def test_merge_bad_inputs_exit_2(tmp_path, capsys):
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"schema": "something else"}))
    for path in (tmp_path / "junk.json", tmp_path / "other.json", tmp_path / "absent.json", tmp_path):
        code, out, err = run_cli(capsys, "manifest", "merge", path)
        assert code == 2 and err.startswith("error: ") and "Traceback" not in err, (path, err)


def test_shards_sharing_one_output_folder_keep_each_others_state(zoo, tmp_path, capsys):
    """Two shards run into one folder (one machine): neither drops the other's skip records."""
    out = tmp_path / "shared_out"
    for k in (1, 2):
        code, _, err = run_cli(capsys, "convert", zoo, "--to", "ort", "--shard", f"{k}/2", "-o", out, "--quiet")
        assert code == 0, err
    state = json.loads((out / ".edgeport-convert.json").read_text())
    assert sorted(state) == sorted(p.name for p in zoo.glob("*.onnx"))
    for k in (1, 2):
        code, stdout, err = run_cli(capsys, "convert", zoo, "--to", "ort", "--shard", f"{k}/2", "-o", out,
                                    "--quiet", "--json")
        assert {r["status"] for r in json.loads(stdout)["models"]} == {"skipped"}
    code, stdout, _ = run_cli(capsys, "manifest", "merge", *sorted(out.glob("edgeport-manifest.*.json")))
    assert code == 0 and "7 models in 2 of 2 shards: complete" in stdout
