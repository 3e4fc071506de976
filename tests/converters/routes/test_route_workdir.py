"""Routes stay in their work folder: an ONNX model's external-data locations are checked (inside
the model's folder, no '..', no absolute path, no symbolic link, a regular file) before any
work, and the onnx2tf route copies only checked files, only into its temp folder."""

import hashlib
import os

import pytest

from tests.conftest import run_cli


def _external_model(path, location):
    """The tiny ONNX classifier with its conv weights stored as external data at `location`, and a
    node name TensorFlow refuses (so the onnx2tf route renames nodes and copies external data)."""
    import onnx

    from tests.tiny_onnx import build

    build(str(path))
    m = onnx.load(str(path))
    m.graph.node[0].name = "Conv@0"
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", location
    onnx.save(m, str(path))


def _tree(root):
    out = {}
    for r, dirs, names in os.walk(root):
        for n in dirs + names:
            p = os.path.join(r, n)
            out[os.path.relpath(p, root)] = (hashlib.sha256(open(p, "rb").read()).hexdigest()
                                             if os.path.isfile(p) and not os.path.islink(p) else "")
    return out


@pytest.fixture
def no_onnx2tf(monkeypatch):
    """The onnx2tf environment is never reached: a refusal must come before any work."""
    from converters import toolenv

    def ensure(*a, **k):
        raise AssertionError("the route started work (reached onnx2tf) on a model it should refuse")

    monkeypatch.setattr(toolenv, "ensure", ensure)


@pytest.mark.parametrize("location,said", [
    ("../../../payload/x", "outside the model's folder"),
    ("/nonexistent/absolute/w.bin", "outside the model's folder"),
    ("link", "a symbolic link"),
    ("sub/../../../payload/x", "outside the model's folder"),
    ("missing.bin", "does not exist"),
])
def test_external_data_is_read_only_from_inside_the_models_folder(tmp_path, capsys, no_onnx2tf, location, said):
    (tmp_path / "payload").mkdir()
    (tmp_path / "payload" / "x").write_bytes(b"\0" * 216)
    deep = tmp_path / "deep" / "a" / "b"
    deep.mkdir(parents=True)
    os.symlink("/etc/passwd", deep / "link")
    _external_model(deep / "m.onnx", location)
    before = _tree(tmp_path)
    code, out, err = run_cli(capsys, "convert", deep / "m.onnx", "--to", "tflite", "-o", tmp_path / "out")
    assert code == 2, (code, out, err)
    last = err.splitlines()[-1]  # after the progress line: one error line
    assert err.count("error:") == 1 and last.startswith("error: ") and said in last, err
    assert "internal error" not in err
    assert _tree(tmp_path) == before  # nothing planted, nothing copied in, no -o folder left


def test_checked_external_data_is_copied_into_the_work_folder_only(tmp_path):
    from converters import formats
    from converters.routes.onnx2tf import _save_beside

    src = tmp_path / "src"
    src.mkdir()
    (src / "w").mkdir()
    _external_model(src / "m.onnx", "w/conv.bin")
    (src / "w" / "conv.bin").write_bytes(b"\0" * 216)
    model = formats.load_onnx(src / "m.onnx", load_external_data=False)
    files = formats.external_data_files(model, src / "m.onnx")
    assert files == {"w/conv.bin": str(src / "w" / "conv.bin")}
    work = tmp_path / "work"
    work.mkdir()
    _save_beside(model, files, str(work / "model.onnx"))
    assert sorted(_tree(work)) == ["model.onnx", "w", "w/conv.bin"]
