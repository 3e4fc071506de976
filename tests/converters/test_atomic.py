"""Atomic outputs: complete or absent, never partial; the previous output survives a failure."""

import os

import pytest

from converters.atomic import atomic_output, write_text_atomic
from edge.errors import InputError


def _hidden(folder):
    return [n for n in os.listdir(folder) if n.startswith(".")]


def test_file_written_on_success(tmp_path):
    final = tmp_path / "m.onnx"
    with atomic_output(final) as tmp:
        assert os.path.basename(tmp) == "m.onnx" and not final.exists()
        with open(tmp, "wb") as f:
            f.write(b"model")
    assert final.read_bytes() == b"model"
    assert _hidden(tmp_path) == []


def test_failure_keeps_previous_and_leaves_nothing(tmp_path):
    final = tmp_path / "m.onnx"
    final.write_bytes(b"old")
    with pytest.raises(ValueError):
        with atomic_output(final) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise ValueError("converter died")
    assert final.read_bytes() == b"old"
    assert _hidden(tmp_path) == []


def test_no_output_written_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="wrote no output"):
        with atomic_output(tmp_path / "x.ort"):
            pass
    assert os.listdir(tmp_path) == []


def test_directory_output_replaces_old_folder(tmp_path):
    final = tmp_path / "m.mlpackage"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with atomic_output(final, directory=True) as tmp:
        os.makedirs(tmp)
        with open(os.path.join(tmp, "new.txt"), "w") as f:
            f.write("new")
    assert sorted(os.listdir(final)) == ["new.txt"]
    assert _hidden(tmp_path) == []


def test_directory_failure_keeps_old_folder(tmp_path):
    final = tmp_path / "m.mlpackage"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(KeyError):
        with atomic_output(final) as tmp:
            os.makedirs(tmp)
            raise KeyError("boom")
    assert sorted(os.listdir(final)) == ["old.txt"]
    assert _hidden(tmp_path) == []


def test_output_folder_is_created_or_refused(tmp_path):
    write_text_atomic(tmp_path / "new" / "deep" / "a.txt", "hi")
    assert (tmp_path / "new" / "deep" / "a.txt").read_text() == "hi"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError):
        write_text_atomic(tmp_path / "afile" / "b.txt", "hi")


def test_pipeline_failure_mid_conversion_leaves_no_output(tmp_path, monkeypatch):
    """A registered conversion that dies after writing part of its output leaves nothing."""
    from converters import pipeline, registry
    from converters.options import ConvertOptions

    src = tmp_path / "m.onnx"
    from onnx import TensorProto, helper, save

    g = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "g",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 2])],
                          [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 2])])
    save(helper.make_model(g), src)
    before = src.read_bytes()

    def dies(source, output_path, options):
        with open(output_path, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("killed halfway")

    regs = registry.load_registry()
    monkeypatch.setitem(registry._REGISTRY, ("onnx", "ort"),
                        registry.Conversion("onnx", "ort", dies))
    with pytest.raises(RuntimeError, match="halfway"):
        pipeline.convert_model(src, "ort", ConvertOptions(quiet=True), validate=False)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]
    assert src.read_bytes() == before
    assert regs  # the real registry was loaded first, then one edge replaced
