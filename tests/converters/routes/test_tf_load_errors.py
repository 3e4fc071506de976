"""A SavedModel TensorFlow itself cannot load: one line naming TensorFlow's error, exit 2.

Every command that reads a SavedModel (convert, validate, check) loads it through
converters.routes.tf_loading.load_saved_model; a failure there is the file's, not a bug:
one `error:` line naming TensorFlow's loading error, exit 2, and with --json one document.
"""

import json
import os
import shutil

import pytest

from tests.conftest import run_cli

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    class Scale(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.random.stateless_normal([4, 3], seed=[1, 2]))

        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
        def __call__(self, x):
            return {"y": tf.nn.softmax(tf.matmul(x, self.w))}

    path = tmp_path_factory.mktemp("sm") / "net_savedmodel"
    m = Scale()
    tf.saved_model.save(m, str(path), signatures=m.__call__)
    return path


def _broken(saved_model, tmp_path):
    """A copy whose variables are damaged: TensorFlow's restore itself fails."""
    bad = tmp_path / "bad_savedmodel"
    shutil.copytree(saved_model, bad)
    for f in (bad / "variables").iterdir():
        if f.name.startswith("variables.data"):
            f.write_bytes(b"\0" * 7)
    return bad


def _one_error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "internal error" not in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", [["convert", "{m}", "--to", "onnx", "-o", "{o}"],
                                     ["validate", "{m}", "{m}"]])
def test_tensorflow_restore_error_is_one_line_exit_2(capsys, monkeypatch, saved_model, tmp_path, command):
    def restore_fails(*a, **k):  # what a Keras-era SavedModel does under Keras 3
        raise AttributeError("'Adam' object has no attribute 'add_slot'")

    monkeypatch.setattr(tf.saved_model, "load", restore_fails)
    argv = [a.format(m=saved_model, o=tmp_path / "out") for a in command]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, err
    line = _one_error_line(err)
    assert "cannot load the SavedModel" in line and "AttributeError" in line and "add_slot" in line
    code, out, err = run_cli(capsys, *argv, "--json")
    doc = json.loads(out)
    assert code == 2 and doc["exit_code"] == 2 and "add_slot" in json.dumps(doc)


def test_check_names_the_loading_error(capsys, monkeypatch, saved_model):
    """`check` reports a model that does not load as its failed `loads` check (exit 1)."""
    def restore_fails(*a, **k):
        raise AttributeError("'Adam' object has no attribute 'add_slot'")

    monkeypatch.setattr(tf.saved_model, "load", restore_fails)
    code, out, err = run_cli(capsys, "check", saved_model)
    assert code == 1 and "internal error" not in err
    assert "cannot load the SavedModel" in out and "add_slot" in out


def test_damaged_variables_are_named_as_tensorflows_error(capsys, saved_model, tmp_path):
    bad = _broken(saved_model, tmp_path)
    code, out, err = run_cli(capsys, "convert", bad, "--to", "onnx", "-o", tmp_path / "out")
    assert code == 2, err
    line = _one_error_line(err)
    assert "cannot load the SavedModel bad_savedmodel" in line
    assert not os.path.exists(tmp_path / "out" / "bad_savedmodel.onnx")
