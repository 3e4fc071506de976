"""Every TFLite artefact runs on plain LiteRT: no Flex ops kept; onnx2tf writes Erf/GeLU with
builtin ops (its pseudo operators); a model that cannot be made builtin-only is refused in one
line naming the op, and nothing is kept."""

import os
import stat

import numpy as np
import pytest

from converters import pipeline, toolenv
from converters.litert_check import NotBuiltinOnly, require_plain_litert
from converters.options import ConvertOptions
from converters.routes import onnx2tf

onnx2tf.pseudo_operator_args = lambda m: ["-rtpo", "Erf"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def gelu_onnx(path):
    """x[1,8] -> MatMul -> GELU written with Erf, as torch.onnx exports nn.GELU before opset 20."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32), "w")
    c = {k: numpy_helper.from_array(np.array(v, np.float32), k)
         for k, v in (("sqrt2", np.sqrt(2.0)), ("one", 1.0), ("half", 0.5))}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Div", ["h", "sqrt2"], ["d"]),
             helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]),
             helper.make_node("Mul", ["h", "a"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    g = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
                          [w, *c.values()])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    return path


def flex_tflite(path):
    """A float TFLite whose Erf is a Flex (Select-TF) op."""
    import tensorflow as tf

    @tf.autograph.experimental.do_not_convert
    def f(x):
        return tf.math.erf(x)

    fn = tf.function(f, input_signature=[tf.TensorSpec([1, 6], tf.float32)])
    c = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    path.write_bytes(c.convert())
    return path


@pytest.fixture(scope="module")
def flex(tmp_path_factory):
    return flex_tflite(tmp_path_factory.mktemp("flex") / "flex.tflite")


def test_flex_model_is_refused_naming_the_op(flex):
    with pytest.raises(NotBuiltinOnly, match=r"Flex.*: Erf"):
        require_plain_litert(flex)


def test_onnx_with_erf_asks_onnx2tf_for_builtin_ops(tmp_path):
    from converters import formats

    model = formats.load_onnx(gelu_onnx(tmp_path / "gelu.onnx"))
    assert onnx2tf.pseudo_operator_args(model) == ["-rtpo", "Erf"]


FAKE = """#!/bin/sh
echo "$*" > "$FAKE_RECORD/args"
while [ $# -gt 0 ]; do case "$1" in -i) IN="$2"; shift;; -o) OUT="$2"; shift;; esac; shift; done
mkdir -p "$OUT" && cp "$FAKE_TFLITE" "$OUT/$(basename "$IN" .onnx)_float32.tflite"
"""


@pytest.mark.skipif(os.name == "nt", reason="the fake onnx2tf is a POSIX shell script")
def test_a_flex_artefact_is_not_kept(tmp_path, monkeypatch, flex):
    """onnx2tf that still writes a Flex op: the hop is refused in one line, nothing kept."""
    envdir = tmp_path / "env"
    (envdir / "bin").mkdir(parents=True)
    for name, text in (("onnx2tf", FAKE), ("onnxsim", "#!/bin/sh\n")):
        p = envdir / "bin" / name
        p.write_text(text)
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    env = toolenv.Env(toolenv.TOOLS["onnx2tf"], str(envdir), "3.11")
    monkeypatch.setattr(toolenv, "ensure", lambda name, progress=None, rebuild=False: env)
    monkeypatch.setenv("FAKE_RECORD", str(tmp_path))
    monkeypatch.setenv("FAKE_TFLITE", str(flex))
    src = gelu_onnx(tmp_path / "gelu.onnx")
    out = tmp_path / "out"
    with pytest.raises(NotBuiltinOnly) as e:
        pipeline.convert_model(src, ["tflite"], ConvertOptions(quiet=True), outdir=out)
    assert "Erf" in str(e.value) and "\n" not in str(e.value)
    assert "-rtpo Erf" in (tmp_path / "args").read_text()
    assert not out.exists() or not os.listdir(out)


@pytest.mark.slow
def test_real_onnx2tf_gelu_is_builtin_only_and_validates(tmp_path):
    from edge.tflite_model import TFLiteModel

    src = gelu_onnx(tmp_path / "gelu.onnx")
    r = pipeline.convert_model(src, ["tflite"], ConvertOptions(quiet=True), outdir=tmp_path / "out")
    hop = r.hops[0]
    assert hop["validation"]["passed"] is True, hop
    ops = TFLiteModel.load(tmp_path / "out" / "gelu_float.tflite").op_names()
    assert not [o for o in ops if str(o).startswith("Flex")], ops
    require_plain_litert(tmp_path / "out" / "gelu_float.tflite")
