"""Artefact names: every known model extension is stripped from the source's name."""

import os

import pytest

from converters import formats, pipeline

EXTENSIONS = [".h5", ".hdf5", ".keras", ".pt", ".pth", ".pt2", ".jit", ".onnx", ".tflite",
              ".mlpackage", ".mlmodel", ".ort", ".torchscript", ".torchscript.pt"]


def test_the_list_covers_every_extension_named_here():
    assert set(EXTENSIONS) <= set(formats.MODEL_EXTENSIONS)


@pytest.mark.parametrize("ext", EXTENSIONS + [e.upper() for e in EXTENSIONS])
@pytest.mark.parametrize("target", sorted(formats.OUTPUT_SUFFIX))
def test_known_extension_is_stripped(tmp_path, ext, target):
    src = tmp_path / ("my.model-v2" + ext)
    out = pipeline.output_path(os.fspath(tmp_path), pipeline.stem_of(src), target)
    assert os.path.basename(out) == "my.model-v2" + formats.OUTPUT_SUFFIX[target]


@pytest.mark.parametrize("name", ["model", "model.bin", "x.h5.bak", ".onnx"])
def test_other_names_are_kept(name):
    assert pipeline.stem_of(name) == name


def test_folder_source_with_trailing_slash():
    assert pipeline.stem_of("/a/b/net.mlpackage/") == "net"
    assert pipeline.stem_of("/a/b/saved_model_dir/") == "saved_model_dir"


def test_keras_hdf5_end_to_end(tmp_path, capsys):
    """A Keras model saved as x.hdf5 gives x_float.tflite."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    keras = pytest.importorskip("keras")
    from edgeport.cli import main

    inp = keras.Input((4,), name="x")
    keras.Model(inp, keras.layers.Dense(2)(inp)).save(tmp_path / "net.h5")
    os.rename(tmp_path / "net.h5", tmp_path / "net.hdf5")
    code = main(["convert", os.fspath(tmp_path / "net.hdf5"), "--to", "tflite",
                 "-o", os.fspath(tmp_path / "out"), "--no-validate", "--quiet"])
    assert code == 0, capsys.readouterr()
    assert "net_float.tflite" in os.listdir(tmp_path / "out")
    assert not [n for n in os.listdir(tmp_path / "out") if "hdf5" in n]
