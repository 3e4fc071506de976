"""Graph rewrites (converters/rewrite): each on a tiny model built here, validated against it,
applied by the planner only before a conversion whose tool refuses the pattern."""

import json

import numpy as np
import pytest


def _sparse_tflite(path):
    """A tiny conv + dense TFLite whose weights are 90% zeros, stored sparse behind DENSIFY ops
    (TFLiteConverter's EXPERIMENTAL_SPARSITY, as MediaPipe's sparse detectors ship)."""
    import tensorflow as tf

    inp = tf.keras.Input((8, 8, 4), batch_size=1)
    x = tf.keras.layers.Conv2D(16, 3, padding="same")(inp)
    x = tf.keras.layers.Flatten()(tf.keras.layers.ReLU()(x))
    model = tf.keras.Model(inp, tf.keras.layers.Dense(10)(x))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.weights:
            k, b = layer.get_weights()
            layer.set_weights([(k * (rng.random(k.shape) < 0.1)).astype(np.float32), b + 0.1])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    path.write_bytes(conv.convert())
    return path


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    return _sparse_tflite(tmp_path_factory.mktemp("rewrite") / "sparse.tflite")


def _run(model_bytes, x):
    from tensorflow.lite.python.interpreter import Interpreter

    it = Interpreter(model_content=bytes(model_bytes))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return [it.get_tensor(o["index"]) for o in it.get_output_details()]


def test_densify_becomes_dense_constants_with_the_same_outputs(sparse):
    from converters.rewrite.tflite import Densify

    original = sparse.read_bytes()
    assert Densify.matches(original) == 2
    dense, count = Densify.apply(original)
    assert count == 2 and Densify.matches(dense) == 0
    x = np.random.default_rng(1).uniform(-1, 1, (1, 8, 8, 4)).astype(np.float32)
    for a, b in zip(_run(original, x), _run(dense, x)):
        np.testing.assert_array_equal(a, b)
    assert Densify.apply(dense) == (dense, 0)     # nothing to do on a dense model


def test_planner_applies_a_rewrite_only_before_a_tool_that_refuses_it(sparse, tmp_path):
    from converters import rewrite
    from converters.artefact import Artefact
    from converters.options import ConvertOptions
    from converters.registry import load_registry

    reg = load_registry()
    src = Artefact(str(sparse), "tflite", {})
    for key, wanted in ((("tflite", "onnx"), ["rewrote 2 DENSIFY into dense constants"]),
                        (("tflite", "tflite-int8"), ["rewrote 2 DENSIFY into dense constants"]),
                        (("onnx", "ort"), [])):
        for no_rewrite in (False, True):
            with rewrite.prepare(src if key[0] == "tflite" else Artefact(str(sparse), "onnx", {}),
                                 reg[key], ConvertOptions(no_rewrite=no_rewrite)) as (given, lines):
                assert lines == ([] if no_rewrite else wanted), key
                assert (given.path == str(sparse)) == (not lines)   # the source is never written
    # a dense model needs nothing: the source itself is converted
    from converters.rewrite.tflite import Densify

    dense = tmp_path / "dense.tflite"
    dense.write_bytes(Densify.apply(sparse.read_bytes())[0])
    with rewrite.prepare(Artefact(str(dense), "tflite", {}), reg[("tflite", "onnx")],
                         ConvertOptions()) as (given, lines):
        assert lines == [] and given.path == str(dense)


def test_every_rewrite_names_conversions_that_exist():
    from converters import rewrite
    from converters.registry import load_registry

    names = {c.name for c in load_registry().values()}
    rws = rewrite.rewrites()
    assert rws
    for rw in rws:
        assert rw.needed_by and set(rw.needed_by) <= names, rw.name
        assert rw.describe(3) and "{" not in rw.describe(3)


def test_sparse_tflite_converts_to_onnx_and_validates_against_the_original(sparse, tmp_path, capsys):
    from conftest import run_cli

    before = sparse.read_bytes()
    code, out, err = run_cli(capsys, "convert", sparse, "--to", "onnx", "-o", tmp_path, "--json")
    assert code == 0, err
    hop = json.loads(out)["models"][0]["artefacts"][0]
    assert hop["validation"]["passed"] is True
    assert hop["rewrites"] == ["rewrote 2 DENSIFY into dense constants"]
    side = json.loads((tmp_path / "sparse.onnx.edgeport.json").read_text())
    assert side["rewrites"] == ["rewrote 2 DENSIFY into dense constants"]
    assert side["source"]["file"] == "sparse.tflite"
    import hashlib

    assert side["source"]["sha256"] == hashlib.sha256(before).hexdigest()
    assert sparse.read_bytes() == before
    code, out, err = run_cli(capsys, "convert", sparse, "--to", "onnx", "-o", tmp_path / "off",
                             "--no-rewrite")
    assert code != 0 and "DENSIFY" in err
