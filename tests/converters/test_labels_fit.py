"""--labels is checked against the model's class count at convert, before any work, and the
sidecar is never written bigger than edgeport reads back."""

import pytest

from edge.errors import InputError
from tests.conftest import run_cli


@pytest.fixture
def onnx_model(tmp_path):
    from tests.tiny_onnx import build

    return build(tmp_path / "net.onnx")  # 4 classes


# a million labels takes 3-6 s to write and read: left out of the quick loop, run by CI
@pytest.mark.parametrize("lines", [pytest.param(10 ** 6, marks=pytest.mark.slow), 5, 2])
def test_labels_that_do_not_fit_the_model_are_refused_in_one_line(tmp_path, capsys, onnx_model, lines):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class{i}\n" for i in range(lines)))
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "convert", onnx_model, "--to", "ort", "--labels", labels, "-o", out)
    assert code == 2 and "labels" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() or not list(out.iterdir())


def test_labels_that_fit_are_embedded(tmp_path, capsys, onnx_model):
    import json

    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\ngray\n")
    code, stdout, err = run_cli(capsys, "convert", onnx_model, "--to", "ort", "--labels", labels,
                                "-o", tmp_path / "out", "--no-validate")
    assert code == 0, err
    side = json.loads((tmp_path / "out" / "net.ort.edgeport.json").read_text())
    assert side["labels"] == ["red", "green", "blue", "gray"]


def test_absurd_label_ids_are_refused(tmp_path):
    from edge.labels import read_labels

    p = tmp_path / "l.txt"
    p.write_text("0 cat\n99999999999 dog\n")
    with pytest.raises(InputError, match="above 1,000,000"):
        read_labels(p)


def test_sidecar_is_never_written_above_its_read_limit(tmp_path, monkeypatch):
    from converters.artefact import Artefact

    monkeypatch.setenv("EDGEPORT_MAX_SIDECAR_BYTES", "1000")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    a = Artefact(str(model), "onnx", {"labels": [f"class{i}" for i in range(500)]})
    with pytest.raises(InputError, match="more than the 1000 bytes edgeport reads back"):
        a.write_sidecar()
    assert not (tmp_path / "m.onnx.edgeport.json").exists()
