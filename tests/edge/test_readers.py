"""One reader per file kind read back (edge/readers.py): arrays and JSON documents.

Every hostile file below ends in one InputError line, before anything big is allocated or
inflated: deflate bombs, lying .npy headers, pickles, truncation, FIFOs, type-confused
manifest fields (generated from the schema), absurd shard counts.
"""

import io
import json
import os
import zipfile

import numpy as np
import pytest

from edge.errors import InputError
from edge.readers import read_arrays
from tests.conftest import run_cli


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def lying_npy(shape, dtype="<f4", payload=b"\0" * 16):
    """An .npy whose header declares `shape` but holds only `payload`."""
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %r, }" % (dtype, tuple(shape))
    header = header.ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + payload


def test_reads_npz_and_npy(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.savez(tmp_path / "d.npz", x=a, y=a.astype(np.int64).T)
    np.savez_compressed(tmp_path / "c.npz", x=a)
    np.save(tmp_path / "z.npy", np.asfortranarray(a))
    d = read_arrays(tmp_path / "d.npz")
    assert set(d) == {"x", "y"} and np.array_equal(d["x"], a) and np.array_equal(d["y"], a.T)
    assert np.array_equal(read_arrays(tmp_path / "c.npz")["x"], a)
    assert np.array_equal(read_arrays(tmp_path / "z.npy")["z"], a)


def test_deflate_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    """A small file declaring far more than the limit: refused from the zip directory, nothing
    inflated (the 3 MB -> 3 GB bomb at a tenth of the scale, with a limit of 64 MB)."""
    monkeypatch.setenv("EDGEPORT_MAX_ARRAYS_BYTES", str(64 << 20))
    path = tmp_path / "bomb.npz"
    n = 256 << 20
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as m:
            m.write(lying_npy((n // 4,), payload=b""))
            zeros = b"\0" * (1 << 24)
            for _ in range(n // len(zeros)):
                m.write(zeros)
    assert path.stat().st_size < 1 << 20
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(InputError, match="would inflate to 256.0 MB, more than the 64.0 MB"):
        read_arrays(path)
    assert tracemalloc.get_traced_memory()[1] < 16 << 20
    tracemalloc.stop()


def test_member_that_lies_about_its_size_stops_at_the_declared_size(tmp_path, monkeypatch):
    """The zip directory says 1 KB, the stream inflates to more: zipfile stops at 1 KB and
    the header's shape is larger than what is there: one line."""
    monkeypatch.setenv("EDGEPORT_MAX_ARRAYS_BYTES", str(1 << 20))
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", lying_npy((1 << 18,), payload=b"\0" * (1 << 20)))
    with pytest.raises(InputError):  # declared 1 MB + header > the 1 MB budget
        read_arrays(path)


@pytest.mark.parametrize("shape", [(10 ** 12, 4), (2 ** 62, 2 ** 62), (1 << 40,)])
def test_npy_header_with_a_huge_shape_is_one_line(tmp_path, capsys, shape):
    (tmp_path / "big.npy").write_bytes(lying_npy(shape))
    with pytest.raises(InputError, match="declares shape"):
        read_arrays(tmp_path / "big.npy")
    with zipfile.ZipFile(tmp_path / "big.npz", "w") as z:
        z.writestr("x.npy", lying_npy(shape))
    with pytest.raises(InputError, match="declares shape|truncated"):
        read_arrays(tmp_path / "big.npz")


def test_truncated_files_are_named_truncated(tmp_path):
    np.savez(tmp_path / "ok.npz", x=np.ones((4, 1001), np.float32))
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="truncated|damaged"):
        read_arrays(tmp_path / "cut.npz")
    (tmp_path / "cut.npy").write_bytes(npy_bytes(np.ones((4, 1001), np.float32))[:2000])
    with pytest.raises(InputError, match="truncated"):
        read_arrays(tmp_path / "cut.npy")


def test_pickles_are_refused(tmp_path):
    np.savez(tmp_path / "p.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="pickle"):
        read_arrays(tmp_path / "p.npz")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "f.npz")
    with pytest.raises(InputError, match="FIFO"):
        read_arrays(tmp_path / "f.npz")
    os.mkfifo(tmp_path / "m.json")
    from converters.manifest import load_manifest

    with pytest.raises(InputError, match="FIFO"):
        load_manifest(tmp_path / "m.json")


@pytest.mark.parametrize("value", ["x", "-1", "1e30", "99999999999999999999", "1.5"])
def test_limit_overrides_are_bounded(monkeypatch, value):
    from edge.files import limit_of

    monkeypatch.setenv("EDGEPORT_MAX_ARRAYS_BYTES", value)
    with pytest.raises(InputError, match="EDGEPORT_MAX_ARRAYS_BYTES"):
        limit_of("arrays")


@pytest.mark.parametrize("case", ["no arrays", "empty stack", "nan", "inf"])
def test_data_that_holds_nothing_usable_is_one_line(tmp_path, case):
    from converters.quantize.calibration import load_data

    p = tmp_path / "d.npz"
    if case == "no arrays":
        np.savez(p)
    elif case == "empty stack":
        np.savez(p, x=np.zeros((0, 3), np.float32))
    else:
        np.savez(p, x=np.array([1.0, float(case)], np.float32))
    with pytest.raises(InputError, match="holds no arrays|is empty|NaN or infinity"):
        load_data(str(p))


# -- manifests: every field x a value of the wrong type, generated from the schema --------------
def good_manifest():
    sha = "0" * 64
    return {"schema": "edgeport-manifest/1", "shard": {"k": 1, "n": 1}, "folder": "/f",
            "folder_models": 1, "folder_fingerprint": sha, "targets": ["onnx"],
            "started": "2026", "wall_ms": 1.0, "host": "h",
            "counts": {"converted": 0, "validated": 1, "refused": 0, "failed": 0},
            "models": [{"model": "m.onnx", "model_path": "/f/m.onnx", "sha256": sha, "format": "onnx",
                        "targets": ["onnx"], "outcome": "validated", "reason": None, "skipped": False,
                        "time_ms": 1.0,
                        "artefacts": [{"model": "/o/m.ort", "format": "ort", "sha256": sha,
                                       "size_bytes": 3, "status": "kept", "time_ms": 0.0,
                                       "validation": None}]}]}


def _paths(doc, prefix=()):
    """Every (path, value) of a JSON document's leaves and containers."""
    for k, v in (doc.items() if isinstance(doc, dict) else enumerate(doc)):
        yield prefix + (k,), v
        if isinstance(v, (dict, list)):
            yield from _paths(v, prefix + (k,))


def _set(doc, path, value):
    doc = json.loads(json.dumps(doc))
    d = doc
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    return doc


def confused_manifests():
    """Each field of a good manifest replaced by a value of another type."""
    cases = []
    for path, v in _paths(good_manifest()):
        if path[-1] == "validation":
            continue  # free-form by design
        for bad in ({"x": 1}, [1], "s", 10 ** 12, True, -1.5):
            same = type(bad) is type(v) or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                            and isinstance(bad, (int, float)) and not isinstance(bad, bool)
                                            and abs(bad) < 10 ** 9 and bad >= 0)
            if not same:
                cases.append(("/".join(map(str, path)), bad))
    return cases


CONFUSED = confused_manifests()


def test_good_manifest_is_read(tmp_path, capsys):
    p = tmp_path / "m.json"
    p.write_text(json.dumps(good_manifest()))
    code, out, err = run_cli(capsys, "manifest", "merge", p)
    assert code == 0, err


@pytest.mark.parametrize("where,value", CONFUSED, ids=[f"{w}={type(v).__name__}" for w, v in CONFUSED])
def test_type_confused_manifest_field_is_one_line(tmp_path, capsys, where, value):
    path = tuple(int(k) if k.isdigit() else k for k in where.split("/"))
    p = tmp_path / "m.json"
    p.write_text(json.dumps(_set(good_manifest(), path, value)))
    code, out, err = run_cli(capsys, "manifest", "merge", p)
    if code == 0:  # some values are legitimate (e.g. a number where a number is expected)
        return
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "internal error" not in err, err


def test_many_type_confusions_are_generated():
    assert len(CONFUSED) >= 17


@pytest.mark.parametrize("n", [10 ** 12, 4097, 0])
def test_absurd_shard_count_is_refused_without_allocating(tmp_path, capsys, n):
    p = tmp_path / "m.json"
    p.write_text(json.dumps(_set(good_manifest(), ("shard", "n"), n)))
    code, out, err = run_cli(capsys, "manifest", "merge", p)
    assert code == 2 and "shard.n" in err and len(err.strip().splitlines()) == 1, err


def test_shard_flag_is_bounded_like_the_manifest():
    from converters.manifest import MAX_SHARDS, parse_shard

    assert parse_shard(f"1/{MAX_SHARDS}") == (1, MAX_SHARDS)
    with pytest.raises(InputError):
        parse_shard(f"1/{MAX_SHARDS + 1}")
    with pytest.raises(InputError):
        parse_shard("1/" + "9" * 5000)


def test_damaged_state_file_counts_as_none(tmp_path):
    from converters.pipeline import read_state

    p = tmp_path / "s.json"
    for bad in ({"m.onnx": {"sha256": "x", "outputs": []}},
                {"m.onnx": {"sha256": "0" * 64, "outputs": "/etc/hostname"}}, [1], "x"):
        p.write_text(json.dumps(bad))
        assert read_state(str(p)) == {}
    good = {"m.onnx": {"sha256": "0" * 64, "options": {}, "format": "onnx",
                       "routes": {"ort": ["onnx", "ort"]}, "outputs": ["/o/m.ort"]}}
    p.write_text(json.dumps(good))
    assert read_state(str(p)) == good


# -- saved outputs --------------------------------------------------------------------------------
def saved_outputs(tmp_path, samples=4, fingerprints=4):
    import hashlib
    from types import SimpleNamespace

    model = tmp_path / "m.tflite"
    model.write_bytes(b"model")
    meta = {"version": 1, "fingerprints": [f"{i:016x}" for i in range(fingerprints)], "inputs": "random",
            "seed": 0, "models": [{"key": "m0", "file": "m.tflite", "format": "tflite",
                                   "sha256": hashlib.sha256(b"model").hexdigest(), "outputs": ["y"]}]}
    path = tmp_path / "out.npz"
    np.savez_compressed(path, m0_o0=np.ones((samples, 1, 1001), np.float32), __meta__=np.array(json.dumps(meta)))
    return path, SimpleNamespace(path=str(model), name="m.tflite"), meta["fingerprints"]


def test_saved_outputs_round_trip_and_truncation_is_one_line(tmp_path):
    from converters.validation.validate import load_outputs

    path, art, prints = saved_outputs(tmp_path)
    assert load_outputs(str(path)).outputs_for(art, prints)["y"].shape == (4, 1, 1001)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 200])
    with pytest.raises(InputError, match="truncated|damaged"):
        load_outputs(str(path))


def test_saved_outputs_with_fewer_samples_than_the_run_is_one_line(tmp_path):
    """Not 'shapes differ: [1, 1001] vs [1, 1001]' later: the count is named here."""
    from converters.validation.validate import load_outputs

    path, art, prints = saved_outputs(tmp_path, samples=2, fingerprints=4)
    with pytest.raises(InputError, match="holds 2 samples .* this run has 4"):
        load_outputs(str(path)).outputs_for(art, prints)


@pytest.mark.parametrize("field,value", [("models", "x"), ("fingerprints", [1]), ("seed", "s"),
                                         ("models", [{"key": "m0"}])])
def test_saved_outputs_metadata_is_checked(tmp_path, field, value):
    from converters.validation.validate import load_outputs

    path, _, _ = saved_outputs(tmp_path)
    meta = json.loads(str(np.load(path)["__meta__"]))
    meta[field] = value
    np.savez(path, m0_o0=np.ones((4, 1), np.float32), __meta__=np.array(json.dumps(meta)))
    with pytest.raises(InputError, match=field):
        load_outputs(str(path))
