"""Routes for models whose original is not at hand: float TFLite -> int8 (-> Edge TPU), ONNX -> TFLite (onnx2tf), ONNX -> Core ML.

Fast tests use the tiny models (tests/data, tests/tiny_onnx.py); the onnx2tf plumbing is
tested with a fake onnx2tf script, the real tool in the slow tests at the end (they build
its environment on first use: minutes, and network access to PyPI).
"""

import ast
import json
import os
import re
import shutil
import stat
import sys

import numpy as np
import pytest

from converters import formats, pipeline, registry, toolenv
from converters.options import ConvertOptions
from edge.errors import EdgeportError, InputError, MissingDependency
from tests import tiny_onnx
from tests.conftest import DATA, REPO, run_cli

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="module")
def colors(tmp_path_factory):
    return tiny_onnx.write_colors(tmp_path_factory.mktemp("colors"))


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    tiny_onnx.build(d / "tiny.onnx")
    tiny_onnx.build(d / "tiny_free.onnx", batch=None)
    tiny_onnx.write_labels(d / "labels.txt")
    return d


# -- planning ---------------------------------------------------------------------------------
def test_float_tflite_plans_to_the_edge_tpu():
    assert [c.name for c in registry.plan_route("tflite", "edgetpu")] == [
        "tflite -> tflite-int8", "tflite-int8 -> edgetpu"]
    # photos (--calibration DIR) or arrays (--data FILE.npz): tests/converters/quantize/test_array_calibration.py
    assert registry.load_registry()[("tflite", "tflite-int8")].needs == (("calibration", "calibration_data"),)


def test_onnx_plans_to_tflite_int8_edgetpu_and_coreml():
    assert [c.target for c in registry.plan_route("onnx", "tflite")] == ["tflite"]
    assert [c.target for c in registry.plan_route("onnx", "tflite-int8")] == ["tflite", "tflite-int8"]
    assert [c.target for c in registry.plan_route("onnx", "edgetpu")] == ["tflite", "tflite-int8", "edgetpu"]
    assert [c.target for c in registry.plan_route("onnx", "coreml")] == ["coreml"]


def test_float_tflite_to_edgetpu_without_images_asks_for_them(capsys):
    code, _, err = run_cli(capsys, "convert", DATA / "color_float.tflite", "--to", "edgetpu", "-o", "/tmp")
    assert code == 2
    assert "tflite -> tflite-int8 (for --to edgetpu) needs --calibration DIR" in err
    assert "cannot be quantized" not in err


# Placeholders in suggested commands, and the source formats each stands for.
PLACEHOLDERS = {
    "SOURCE": ["tflite", "keras", "savedmodel", "onnx", "torch-module"],
    '"$(python': ["torch-module"],      # reference_models.py: the state dict in the wheel
    "net.keras": ["keras"], "float.tflite": ["tflite"], "net.onnx": ["onnx"], "models/": ["keras"],
}
SUGGESTION = re.compile(r"(?:edgeport convert|^ {2,}convert) (\S+)(.*?)--to (\S+)", re.M)


def _strings(path):
    """Every string literal of a module, f-strings with their fields as {field}."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value
        elif isinstance(node, ast.JoinedStr):
            yield "".join(v.value if isinstance(v, ast.Constant) else "{" + ast.unparse(v.value) + "}"
                          for v in node.values)


def test_every_suggested_convert_command_plans():
    """Hints and examples in converters/ and edgeport/ name only routes the registry plans."""
    found = []
    for root in ("converters", "edgeport"):
        for path in sorted((REPO / root).rglob("*.py")):
            for text in _strings(path):
                if "convert" not in text:
                    continue
                for m in SUGGESTION.finditer(text):
                    src, targets = m.group(1).strip("`"), m.group(3).strip("`.,)")
                    if src == "{path}":    # inspect: checked below, per format
                        continue
                    assert src in PLACEHOLDERS, f"{path}: unknown source '{src}' in: {m.group(0)}"
                    for fmt in PLACEHOLDERS[src]:
                        for t in pipeline.parse_targets(targets):
                            registry.plan_route(fmt, t)   # raises when no route exists
                            found.append((path.name, fmt, t))
    assert ("compile.py", "tflite", "edgetpu") in found and ("compile.py", "onnx", "tflite-int8") in found
    assert ("convert.py", "onnx", "coreml") in found


@pytest.mark.parametrize("fmt", [f for f in formats.ALL if f not in ("tflite", "tflite-int8", "edgetpu")])
def test_inspect_suggests_a_conversion_only_when_one_plans(fmt):
    from converters.validation.inspect import convert_hint

    hint = convert_hint("m", fmt)
    if "edgeport convert" in hint:
        registry.plan_route(fmt, "tflite")
    else:
        with pytest.raises(InputError):
            registry.plan_route(fmt, "tflite")
        assert f"no route from {fmt} to TFLite" in hint


# -- float TFLite -> full-int8 -------------------------------------------------------------------
@pytest.fixture(scope="module")
def int8_run(tmp_path_factory, colors):
    out = tmp_path_factory.mktemp("int8")
    src = out / "color.tflite"
    shutil.copyfile(DATA / "color_float.tflite", src)
    opts = ConvertOptions(calibration=str(colors), preprocessing={"mean": [128], "std": [128]}, quiet=True)
    return out, pipeline.convert_model(src, ["tflite-int8"], opts, outdir=out)


def test_float_tflite_quantizes_and_validates(int8_run):
    out, r = int8_run
    hop = r.hops[0]
    assert r.routes["tflite-int8"] == ["tflite", "tflite-int8"]
    assert hop["validation"]["passed"] is True, hop["validation"]
    assert hop["validation"]["summary"].startswith("valid: top-1 4/4")
    path = out / "color_int8.tflite"
    assert formats.detect_format(path) == formats.TFLITE_INT8
    side = json.loads((out / "color_int8.tflite.edgeport.json").read_text())
    conv = side["conversion"]
    assert conv["io_dtype"] == "uint8" and conv["bias_correction"]["ops"] == 1
    assert side["calibration"]["count"] == 4 and side["preprocessing"]["layout"] == "NHWC"
    from edge.tflite_model import TFLiteModel

    m = TFLiteModel.load(path)
    assert [t.dtype for t in m.inputs() + m.outputs()] == ["UINT8", "UINT8"]


def test_int8_io_dtype_and_nchw_input(tmp_path, colors):
    src = tmp_path / "nchw.tflite"
    shutil.copyfile(DATA / "color_nchw.tflite", src)
    opts = ConvertOptions(calibration=str(colors), io_dtype="int8",
                          preprocessing={"mean": [128], "std": [128]}, quiet=True)
    r = pipeline.convert_model(src, ["tflite-int8"], opts, outdir=tmp_path)
    assert r.hops[0]["validation"]["passed"] is True, r.hops[0]["validation"]
    side = json.loads((tmp_path / "nchw_int8.tflite.edgeport.json").read_text())
    assert side["preprocessing"]["layout"] == "NCHW" and side["conversion"]["io_dtype"] == "int8"


def test_broken_int8_model_fails_validation(int8_run, colors):
    """A faithful int8 model passes; the same model with its FC weights negated must fail."""
    from tensorflow.lite.tools import flatbuffer_utils as fu

    from converters.artefact import Artefact
    from converters.validation.validate import validate_pair

    out, _ = int8_run
    model = fu.read_model(str(out / "color_int8.tflite"))
    g = model.subgraphs[0]
    fc = next(op for op in g.operators if model.operatorCodes[op.opcodeIndex].builtinCode == 9)
    buf = model.buffers[g.tensors[fc.inputs[1]].buffer]
    buf.data = (-np.frombuffer(bytes(buf.data), np.int8).clip(-127)).astype(np.int8).view(np.uint8)
    broken = out / "broken_int8.tflite"
    fu.write_model(model, str(broken))
    src = Artefact.open(out / "color.tflite")
    opts = ConvertOptions(calibration=str(colors), preprocessing={"mean": [128], "std": [128]})
    good = validate_pair(src, Artefact.open(out / "color_int8.tflite"), opts)
    bad = validate_pair(src, Artefact(str(broken), formats.TFLITE_INT8, {}), opts)
    assert good.passed and not bad.passed
    assert "top-1 agreement" in bad.summary_line()


def test_int8_rejects_non_image_and_quantized_inputs(tmp_path, colors):
    from converters.artefact import Artefact
    from converters.routes.tflite_quantizer import tflite_to_tflite_int8

    opts = ConvertOptions(calibration=str(colors), quiet=True)
    with pytest.raises(InputError, match="already .*quantized"):
        tflite_to_tflite_int8(Artefact(str(DATA / "color_uint8.tflite"), "tflite", {}), tmp_path / "o", opts)
    with pytest.raises(InputError, match="needs calibration samples"):
        tflite_to_tflite_int8(Artefact(str(DATA / "color_float.tflite"), "tflite", {}), tmp_path / "o",
                              ConvertOptions(quiet=True))
    from tensorflow.lite.tools import flatbuffer_utils as fu  # a MediaPipe-style custom op

    m = fu.read_model(str(DATA / "color_float.tflite"))
    m.operatorCodes[0].builtinCode = m.operatorCodes[0].deprecatedBuiltinCode = fu.schema_fb.BuiltinOperator.CUSTOM
    m.operatorCodes[0].customCode = b"Convolution2DTransposeBias"
    fu.write_model(m, str(tmp_path / "custom.tflite"))
    with pytest.raises(EdgeportError, match=r"^custom.tflite uses custom ops \(Convolution2DTransposeBias\) that "
                                            "TFLite's calibrator cannot run"):
        tflite_to_tflite_int8(Artefact(str(tmp_path / "custom.tflite"), "tflite", {}), tmp_path / "o", opts)


# -- ONNX -> Core ML ---------------------------------------------------------------------------
@pytest.mark.skipif(sys.version_info < (3, 11), reason="onnx2coreml needs Python 3.11+")
def test_onnx_to_coreml_with_image_input_labels_and_metadata(onnx_dir, tmp_path):
    pytest.importorskip("onnx2coreml")
    import coremltools as ct

    opts = ConvertOptions(preprocessing={"mean": [128], "std": [128]}, labels=str(onnx_dir / "labels.txt"),
                          author="edgeport tests", description="tiny color classifier", quiet=True)
    r = pipeline.convert_model(onnx_dir / "tiny_free.onnx", ["coreml"], opts, outdir=tmp_path)
    hop = r.hops[0]
    assert hop["validation"]["passed"] is True, hop["validation"]      # structure on Linux
    spec = ct.models.MLModel(str(tmp_path / "tiny_free.mlpackage"), skip_model_load=True).get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    assert spec.description.input[0].type.WhichOneof("Type") == "imageType"
    assert spec.description.predictedFeatureName == "classLabel"
    assert spec.description.output[0].name == "classLabel"
    assert spec.description.metadata.author == "edgeport tests"
    assert "edgeport_provenance" in spec.description.metadata.userDefined
    ops = [op.type for op in spec.mlProgram.functions["main"].block_specializations[
        next(iter(spec.mlProgram.functions["main"].block_specializations))].operations]
    assert "mul" in ops and "add" in ops     # the image scale/bias ahead of the conv
    side = json.loads((tmp_path / "tiny_free.mlpackage.edgeport.json").read_text())
    assert side["labels"] == tiny_onnx.LABELS and side["conversion"]["input_shape"] == [1, 3, 16, 16]


def test_onnx_to_coreml_folds_constants_and_names_missing_ops(tmp_path):
    pytest.importorskip("onnx2coreml")
    import onnx
    from onnx import TensorProto, helper

    def model(op):
        g = helper.make_graph(
            [helper.make_node("Constant", [], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.0])),
             helper.make_node("Constant", [], ["k"], value_float=3.0),
             helper.make_node("Mul", ["x", "c"], ["m"]), helper.make_node(op, ["m", "k"], ["y"], name="last")],
            "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    onnx.save(model("Add"), tmp_path / "ok.onnx")
    r = pipeline.convert_model(tmp_path / "ok.onnx", ["coreml"], ConvertOptions(quiet=True), outdir=tmp_path)
    assert r.hops[0]["validation"]["passed"] is True, r.hops[0]["validation"]
    onnx.save(model("BitShift"), tmp_path / "bad.onnx")
    with pytest.raises(EdgeportError, match=r"no Core ML lowering in onnx2coreml: BitShift \(node last\) "
                       r"\(BitShift on values computed from the inputs at run time"):
        pipeline.convert_model(tmp_path / "bad.onnx", ["coreml"], ConvertOptions(quiet=True), outdir=tmp_path)


def test_coreml_precision_float32_keeps_values_float16_cannot_hold(tmp_path):
    """A power spectrum of raw audio overflows float16 (inf, then NaN): validation fails the
    default float16 program, and --coreml-precision float32 makes one that validates."""
    pytest.importorskip("onnx2coreml")
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["p"]), helper.make_node("ReduceSum", ["p"], ["s"]),
                           helper.make_node("Log", ["s"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "power.onnx")
    from converters.validation.signature import InputOverrides

    verdicts = {}
    for precision in ("float16", "float32"):
        opts = ConvertOptions(quiet=True, coreml_precision=precision)
        opts.input_overrides = InputOverrides.parse(ranges=["[-30000,30000]"])
        r = pipeline.convert_model(tmp_path / "power.onnx", ["coreml"], opts, outdir=tmp_path / precision)
        verdicts[precision] = r.hops[0]["validation"]["passed"]
    assert verdicts == {"float16": False, "float32": True}


def test_onnx_to_coreml_missing_or_old_python_says_what_to_install(monkeypatch, onnx_dir, tmp_path):
    from converters.artefact import Artefact
    from converters.routes import coremltools as route

    src = Artefact(str(onnx_dir / "tiny.onnx"), "onnx", {})
    monkeypatch.setitem(sys.modules, "onnx2coreml", None)
    with pytest.raises(MissingDependency) as e:
        route.onnx_to_coreml(src, tmp_path / "m.mlpackage", ConvertOptions(quiet=True))
    assert "onnx2coreml" in str(e.value) and "pip install 'edgeport[convert]'" in str(e.value)

    class Old(tuple):
        major, minor = 3, 10

    monkeypatch.setattr(sys, "version_info", Old((3, 10, 12)))
    with pytest.raises(MissingDependency, match="needs Python 3.11 or newer; this is 3.10"):
        route.onnx_to_coreml(src, tmp_path / "m.mlpackage", ConvertOptions(quiet=True))


# -- ONNX -> TFLite (onnx2tf) plumbing, with a fake onnx2tf ---------------------------------
FAKE_ONNX2TF = """#!/bin/sh
# fake onnx2tf: records its call, insists on what the real one needs, copies a TFLite model
echo "$*" > "$FAKE_RECORD/args"
cp calibration_image_sample_data_20x128x128x3_float32.npy "$FAKE_RECORD/" || { echo "ERROR: would download test data"; exit 1; }
command -v onnxsim > /dev/null || { echo "ERROR: onnxsim not on PATH"; exit 1; }
while [ $# -gt 0 ]; do case "$1" in -i) IN="$2"; shift;; -o) OUT="$2"; shift;; esac; shift; done
mkdir -p "$OUT" && cp "$FAKE_TFLITE" "$OUT/$(basename "$IN" .onnx)_float32.tflite"
echo "simplified" > "$IN"    # as onnx2tf's onnxsim step does: input and output are one file
"""


@pytest.fixture
def fake_onnx2tf(tmp_path, monkeypatch):
    envdir = tmp_path / "env"
    (envdir / "bin").mkdir(parents=True)
    for name, text in (("onnx2tf", FAKE_ONNX2TF), ("onnxsim", "#!/bin/sh\n")):
        p = envdir / "bin" / name
        p.write_text(text)
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    env = toolenv.Env(toolenv.TOOLS["onnx2tf"], str(envdir), "3.11")
    monkeypatch.setattr(toolenv, "ensure", lambda name, progress=None, rebuild=False: env)
    record = tmp_path / "record"
    record.mkdir()
    monkeypatch.setenv("FAKE_RECORD", str(record))
    # color_float.tflite computes what tiny.onnx computes, on NHWC images
    monkeypatch.setenv("FAKE_TFLITE", str(DATA / "color_float.tflite"))
    return record


@pytest.mark.skipif(os.name == "nt", reason="the fake onnx2tf is a POSIX shell script")
def test_onnx_to_tflite_plumbing(fake_onnx2tf, onnx_dir, tmp_path, colors):
    opts = ConvertOptions(preprocessing={"mean": [128], "std": [128]}, calibration=str(colors), quiet=True)
    before = (onnx_dir / "tiny_free.onnx").read_bytes()
    r = pipeline.convert_model(onnx_dir / "tiny_free.onnx", ["tflite"], opts, outdir=tmp_path)
    assert (onnx_dir / "tiny_free.onnx").read_bytes() == before     # onnx2tf rewrote its copy only
    hop = r.hops[0]
    assert hop["validation"]["passed"] is True, hop["validation"]     # NCHW ONNX vs NHWC TFLite
    args = (fake_onnx2tf / "args").read_text().split()
    assert "-coion" in args and args[args.index("-b") + 1] == "1"     # the free batch fixed to 1
    sample = np.load(fake_onnx2tf / "calibration_image_sample_data_20x128x128x3_float32.npy")
    assert sample.shape == (20, 128, 128, 3) and sample.dtype == np.float32
    assert 0.0 <= sample.min() and sample.max() <= 1.0 and sample.max() > 0.5   # photos, 0..1
    side = json.loads((tmp_path / "tiny_free_float.tflite.edgeport.json").read_text())
    assert side["preprocessing"]["layout"] == "NHWC"
    assert side["conversion"]["input_layout"].startswith("NHWC")
    assert side["conversion"]["onnx_input_shape"] == [1, 3, 16, 16]


@pytest.mark.skipif(os.name == "nt", reason="the fake onnx2tf is a POSIX shell script")
def test_onnx_shapes_do_not_bind_the_channel_last_intermediate(fake_onnx2tf, onnx_dir, tmp_path, colors):
    """`--input-shapes x:[1,3,16,16]` names the ONNX input; the TFLite that onnx2tf makes takes
    [1,16,16,3], so its int8 hop is validated on the TFLite's own fixed shape."""
    from converters.validation.signature import InputOverrides

    opts = ConvertOptions(preprocessing={"mean": [128], "std": [128]}, calibration=str(colors), quiet=True)
    import onnx

    name = onnx.load(onnx_dir / "tiny_free.onnx").graph.input[0].name
    opts.input_overrides = InputOverrides.parse(shapes=[f"{name}:[1,3,16,16]"])
    r = pipeline.convert_model(onnx_dir / "tiny_free.onnx", ["tflite-int8"], opts, outdir=tmp_path)
    assert [h["validation"]["passed"] for h in r.hops] == [True, True], [h["validation"] for h in r.hops]


@pytest.mark.skipif(os.name == "nt", reason="the fake onnx2tf is a POSIX shell script")
def test_onnx_to_tflite_tool_failure_is_one_line(fake_onnx2tf, onnx_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TFLITE", str(tmp_path / "missing.tflite"))
    with pytest.raises(EdgeportError) as e:
        pipeline.convert_model(onnx_dir / "tiny.onnx", ["tflite"], ConvertOptions(quiet=True), outdir=tmp_path)
    assert "onnx2tf" in str(e.value)
    assert not (tmp_path / "tiny_float.tflite").exists()


def test_onnx_names_tensorflow_refuses_are_renamed(tmp_path):
    """paddle2onnx names nodes and tensors 'Conv@0'; onnx2tf fails on them ("not a valid scope
    name"), so the route renames them: same graph, same outputs, only TF-safe names."""
    import onnx
    import onnxruntime as ort

    from converters.routes.onnx2tf import _TF_NAME, tf_safe_names

    tiny_onnx.build(tmp_path / "m.onnx")
    m = onnx.load(tmp_path / "m.onnx")
    keep_io = [i.name for i in m.graph.input], [o.name for o in m.graph.output]
    inner = {x for n in m.graph.node for x in n.output} - set(keep_io[1])
    mapping = {x: f"{x}@{i}" for i, x in enumerate(sorted(inner))}
    for i, n in enumerate(m.graph.node):
        n.name = f"Op@{i}"
        n.input[:] = [mapping.get(x, x) for x in n.input]
        n.output[:] = [mapping.get(x, x) for x in n.output]
    onnx.save(m, tmp_path / "at.onnx")
    assert len(tf_safe_names(m)) == len(m.graph.node) + len(mapping)
    assert all(_TF_NAME.match(n.name) for n in m.graph.node)
    assert all(_TF_NAME.match(x) for n in m.graph.node for x in list(n.input) + list(n.output))
    assert ([i.name for i in m.graph.input], [o.name for o in m.graph.output]) == keep_io
    onnx.checker.check_model(m)
    onnx.save(m, tmp_path / "safe.onnx")
    name = keep_io[0][0]
    shape = [d.dim_value or 1 for d in m.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    a = ort.InferenceSession(str(tmp_path / "at.onnx")).run(None, {name: x})[0]
    b = ort.InferenceSession(str(tmp_path / "safe.onnx")).run(None, {name: x})[0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(os.name == "nt", reason="the fake onnx2tf is a POSIX shell script")
def test_each_target_succeeds_or_fails_on_its_own(fake_onnx2tf, onnx_dir, tmp_path, monkeypatch, colors, capsys):
    """`--to ort,tflite,tflite-int8,edgetpu` makes ORT though onnx2tf fails; the failed hop is
    run once, and each target it blocks says why in one line; exit 1, the worst reason."""
    monkeypatch.setenv("FAKE_TFLITE", str(tmp_path / "missing.tflite"))
    calls = []
    real = toolenv.run
    monkeypatch.setattr(toolenv, "run", lambda *a, **k: calls.append(a) or real(*a, **k))
    code, out, _ = run_cli(capsys, "convert", onnx_dir / "tiny.onnx", "--to", "ort,tflite,tflite-int8,edgetpu",
                           "--calibration", colors, "-o", tmp_path / "out", "--json")
    m = json.loads(out)["models"][0]
    assert code == 1 and m["exit_code"] == 1 and len(calls) == 1
    assert [a["format"] for a in m["artefacts"]] == ["ort"] and (tmp_path / "out" / "tiny.ort").exists()
    assert sorted(m["refused"]) == ["edgetpu", "tflite", "tflite-int8"]
    assert all("onnx2tf" in why and "\n" not in why for why in m["refused"].values())
    # No target made: one error line, and the JSON still gives each target its reason.
    code, out, err = run_cli(capsys, "convert", onnx_dir / "tiny.onnx", "--to", "tflite,coreml", "--json",
                             "--input-shapes", "[1,3,16,16,1]", "-o", tmp_path / "out")
    m = json.loads(out)["models"][0]
    assert code == 2 and m["status"] == "failed" and sorted(m["refused"]) == ["coreml", "tflite"]
    assert err.count("error: ") == 1 and len(calls) == 1
    # A target that cannot be planned (here: no calibration images) is refused before any work.
    code, out, _ = run_cli(capsys, "convert", onnx_dir / "tiny.onnx", "--to", "ort,edgetpu",
                           "-o", tmp_path / "out2")
    assert code == 2 and (tmp_path / "out2" / "tiny.ort").exists() and not calls[1:]
    assert "--to edgetpu: not made: tflite -> tflite-int8 (for --to edgetpu) needs --calibration DIR" in out


@pytest.mark.skipif(os.name == "nt", reason="the fake onnx2tf is a POSIX shell script")
def test_a_single_target_failure_is_said_once(fake_onnx2tf, onnx_dir, tmp_path, monkeypatch, capsys):
    """`--to tflite` alone: its failure is the one error line, not also a '--to tflite:' line."""
    monkeypatch.setenv("FAKE_TFLITE", str(tmp_path / "missing.tflite"))
    code, out, err = run_cli(capsys, "convert", onnx_dir / "tiny.onnx", "--to", "tflite", "-o", tmp_path / "o")
    assert code == 1 and err.count("error: ") == 1, err
    assert not [ln for ln in (out + err).splitlines() if ln.startswith("--to tflite:")], out + err


def test_onnx_routes_take_input_shapes_by_name_and_follow_linked_dims():
    """onnx2tf and onnx2coreml fix every input from --input-shapes (by name, or bare for one
    input); a dimension named like one the user fixed follows it; a free batch becomes 1."""
    import onnx
    from onnx import TensorProto, helper

    from converters.routes.onnx_inputs import static_shapes
    from converters.validation.signature import InputOverrides

    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"], name="Softmax@0"),
         helper.make_node("Identity", ["state"], ["s"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "samples"]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 128]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "samples"]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, "batch", 128])])
    model = helper.make_model(g)

    def shapes(**kw):
        opts = ConvertOptions(quiet=True)
        opts.input_overrides = InputOverrides.parse(**kw)
        return [(n, d) for n, d, _ in static_shapes(model, opts, "m.onnx")]

    assert shapes(shapes=["x:[3,512]"]) == [("x", [3, 512]), ("state", [2, 3, 128]), ("sr", [])]
    with pytest.raises(InputError, match=r"input 'x' has an open dimension 1 \(samples\).*--input-shapes x:"):
        shapes()
    with pytest.raises(InputError, match="a bare input shape fixes one input; m.onnx has 3"):
        shapes(shapes=["[1,512]"])
    with pytest.raises(InputError, match="names y, which m.onnx does not have"):
        shapes(shapes=["y:[1,512]"])
    with pytest.raises(InputError, match="has 3 dimensions, m.onnx's input has 2"):
        shapes(shapes=["x:[1,2,3]"])
    from converters.routes.onnx2tf import tf_safe_names

    assert tf_safe_names(model) == {"Softmax@0": "Softmax_0"} and model.graph.node[0].name == "Softmax_0"
    onnx.checker.check_model(model)
    assert tf_safe_names(model) == {}


def test_onnx2tf_failure_names_the_node_and_what_tensorflow_refused(tmp_path):
    from converters.routes.onnx2tf import failed_node

    tiny_onnx.build(tmp_path / "m.onnx")
    model = formats.load_onnx(str(tmp_path / "m.onnx"))
    node = model.graph.node[0]
    log = tmp_path / "log"
    log.write_text("\x1b[31mERROR:\x1b[0m The trace log is below.\nTraceback (most recent call last):\n"
                   "ValueError: Exception encountered when calling layer \"tf.nn.convolution\" (type TFOpLambda).\n\n"
                   "Depth of output (258) is not a multiple of the number of groups (576) for '{{node x}} = Conv2D'\n"
                   f"\x1b[31mERROR:\x1b[0m onnx_op_name: {node.name}\n")
    assert failed_node(log, model) == (f"node {node.name} ({node.op_type}): ValueError: Depth of output (258) "
                                       "is not a multiple of the number of groups (576)")
    log.write_text("Traceback\nRuntimeError: something else\n")   # no node: still its one cause
    assert failed_node(log, model) == "onnx2tf failed inside (no node named): RuntimeError: something else"
    log.write_text("nothing useful\n")
    assert failed_node(log, model) is None


def test_onnx_to_tflite_free_spatial_dims_need_input_shape(tmp_path, fake_onnx2tf):
    import onnx

    tiny_onnx.build(tmp_path / "m.onnx")
    m = onnx.load(tmp_path / "m.onnx")
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    onnx.save(m, tmp_path / "free.onnx")
    with pytest.raises(InputError, match="--input-shape"):
        pipeline.convert_model(tmp_path / "free.onnx", ["tflite"], ConvertOptions(quiet=True), outdir=tmp_path)


# -- the real onnx2tf (slow: builds its environment on first use) --------------------------
@pytest.mark.slow
def test_real_onnx2tf_tiny_to_float_and_int8(onnx_dir, tmp_path, colors):
    opts = ConvertOptions(preprocessing={"mean": [128], "std": [128]}, calibration=str(colors),
                          labels=str(onnx_dir / "labels.txt"))
    r = pipeline.convert_model(onnx_dir / "tiny_free.onnx", ["tflite", "tflite-int8"], opts, outdir=tmp_path)
    assert r.routes["tflite-int8"] == ["onnx", "tflite", "tflite-int8"]
    for hop in r.hops:
        assert hop["validation"]["passed"] is True, hop
    from edge.tflite_model import TFLiteModel

    f = TFLiteModel.load(tmp_path / "tiny_free_float.tflite")
    assert list(f.inputs()[0].shape) == [1, 16, 16, 3]                # NHWC, no transpose needed
    assert "TRANSPOSE" not in f.op_names()[:1]
    assert formats.detect_format(tmp_path / "tiny_free_int8.tflite") == formats.TFLITE_INT8
    side = json.loads((tmp_path / "tiny_free_int8.tflite.edgeport.json").read_text())
    assert side["preprocessing"]["layout"] == "NHWC" and side["route"] == ["onnx", "tflite", "tflite-int8"]
    assert toolenv.info("onnx2tf")["ready"]


# -- the support matrix (docs/formats.md) lists exactly the routes the registry plans -------
README_ROWS = {
    "PyTorch module factory + state dict": ["torch-module"],
    "TorchScript, torch.export `.pt2` (`--trust-pickle`)": ["torchscript", "torch-export"],
    "Keras `.keras`/`.h5`, TF SavedModel": ["keras", "savedmodel"],
    "TFLite float": ["tflite"],
    "TFLite full-int8": ["tflite-int8"],
    "ONNX": ["onnx"],
}


def test_readme_support_matrix_matches_the_registry():
    text = (REPO / "docs" / "formats.md").read_text()
    start = text.index("| from \\ to |")
    lines = text[start:].split("\n\n")[0].splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")][1:]
    targets = [pipeline.parse_targets(h.split()[0])[0] for h in head]
    seen = set()
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] in README_ROWS, f"unknown README row {cells[0]!r}"
        seen.add(cells[0])
        for fmt in README_ROWS[cells[0]]:
            for target, cell in zip(targets, cells[1:]):
                try:
                    planned = bool(registry.plan_route(fmt, target))
                except InputError:
                    planned = False
                assert planned == (cell != "-"), f"README says {cell!r} for {fmt} -> {target}"
    assert seen == set(README_ROWS)


# -- a non-classifier (a segmentation-like feature map): cosine and scale decide ------------
@pytest.fixture(scope="module")
def feature_map_run(tmp_path_factory, colors):
    import tensorflow as tf

    out = tmp_path_factory.mktemp("fmap")
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((16, 16, 3), batch_size=1, name="image")
    x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    y = tf.keras.layers.Conv2D(4, 1, name="mask")(x)
    conv = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, y))
    (out / "fmap.tflite").write_bytes(conv.convert())
    conv.optimizations = [tf.lite.Optimize.DEFAULT]          # float16 weights + DEQUANTIZE, as
    conv.target_spec.supported_types = [tf.float16]          # MediaPipe ships its models
    (out / "fmap_fp16.tflite").write_bytes(conv.convert())
    opts = ConvertOptions(calibration=str(colors), preprocessing={"mean": [128], "std": [128]}, quiet=True)
    return out, opts, pipeline.convert_model(out / "fmap.tflite", ["tflite-int8"], opts, outdir=out)


def test_feature_map_model_judged_by_cosine_and_scale(feature_map_run):
    from tensorflow.lite.tools import flatbuffer_utils as fu

    from converters.artefact import Artefact
    from converters.validation.validate import validate_pair

    out, opts, r = feature_map_run
    v = r.hops[0]["validation"]
    assert v["passed"] is True and "top-1" not in v["summary"] and "cosine" in v["summary"], v
    model = fu.read_model(str(out / "fmap_int8.tflite"))
    g = model.subgraphs[0]
    convs = [op for op in g.operators if model.operatorCodes[op.opcodeIndex].builtinCode == 3]
    buf = model.buffers[g.tensors[convs[-1].inputs[1]].buffer]       # the last conv's weights
    buf.data = (-np.frombuffer(bytes(buf.data), np.int8).clip(-127)).astype(np.int8).view(np.uint8)
    fu.write_model(model, str(out / "broken.tflite"))
    bad = validate_pair(Artefact.open(out / "fmap.tflite"), Artefact(str(out / "broken.tflite"), "tflite-int8", {}),
                        opts)
    assert not bad.passed and "cosine" in bad.summary_line()


def test_float16_weights_are_folded_then_quantized(feature_map_run):
    from edge.tflite_model import TFLiteModel

    out, opts, _ = feature_map_run
    assert "DEQUANTIZE" in TFLiteModel.load(out / "fmap_fp16.tflite").op_names()
    r = pipeline.convert_model(out / "fmap_fp16.tflite", ["tflite-int8"], opts, outdir=out)
    assert r.hops[0]["validation"]["passed"] is True, r.hops[0]["validation"]
    side = json.loads((out / "fmap_fp16_int8.tflite.edgeport.json").read_text())
    assert side["conversion"]["float16_weights_folded"] == 4          # 2 weights + 2 biases
    assert side["conversion"]["bias_correction"]["ops"] == 2
    assert "DEQUANTIZE" not in TFLiteModel.load(out / "fmap_fp16_int8.tflite").op_names()


def test_relu_0_to_1_is_split_for_the_quantizer(tmp_path, colors):
    """onnx2tf turns Clip(0, 1) into RELU_0_TO_1, which TFLite's quantizer refuses; the route
    rewrites it as RELU + MINIMUM(1) (the same values) and the model quantizes and validates."""
    import tensorflow as tf

    from converters.quantize.tflite_int8 import op_histogram, split_relu_0_to_1
    from edge.interpreter import make_interpreter

    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((16, 16, 3), batch_size=1, name="image")
    x = tf.keras.layers.Conv2D(8, 3, padding="same")(tf.keras.layers.ReLU(max_value=6.0)(inp))
    y = tf.keras.layers.Conv2D(4, 1)(x)
    data = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, y)).convert()
    from tensorflow.lite.tools import flatbuffer_utils as fu  # TensorFlow writes RELU6 here;

    m = fu.convert_bytearray_to_object(bytearray(data))         # onnx2tf writes RELU_0_TO_1
    for oc in m.operatorCodes:
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == fu.schema_fb.BuiltinOperator.RELU6:
            oc.builtinCode, oc.deprecatedBuiltinCode = fu.schema_fb.BuiltinOperator.RELU_0_TO_1, 127
    data = bytes(fu.convert_object_to_bytearray(m))
    (tmp_path / "clip.tflite").write_bytes(data)
    assert "RELU_0_TO_1" in op_histogram(tmp_path / "clip.tflite")
    split, n = split_relu_0_to_1(data)
    (tmp_path / "split.tflite").write_bytes(split)
    ops = op_histogram(tmp_path / "split.tflite")
    assert n == 1 and "RELU_0_TO_1" not in ops and ops["RELU"] == 1 and ops["MINIMUM"] == 1
    x = np.random.default_rng(0).normal(0, 2, (1, 16, 16, 3)).astype(np.float32)
    outs = []
    for p in ("clip.tflite", "split.tflite"):
        it, _ = make_interpreter(str(tmp_path / p), device="cpu")
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(outs[0], outs[1])
    opts = ConvertOptions(calibration=str(colors), preprocessing={"mean": [128], "std": [128]}, quiet=True)
    r = pipeline.convert_model(tmp_path / "clip.tflite", ["tflite-int8"], opts, outdir=tmp_path)
    assert r.hops[0]["validation"]["passed"] is True, r.hops[0]["validation"]


def test_tf_safe_names_reach_subgraphs_with_one_mapping():
    """A branch that reads an outer tensor named 'x@0' still finds it after the rename."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from converters.formats import onnx_graphs as _graphs
    from converters.routes.onnx2tf import _TF_NAME, tf_safe_names

    branch = lambda k: helper.make_graph(  # noqa: E731
        [helper.make_node("Add", ["x@0", "x@0"] if k else ["x@0", "one"], [f"y{k}"], name=f"Add@{k}")],
        f"b{k}", [], [helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, [2])],
        [helper.make_tensor("one", TensorProto.FLOAT, [2], [1.0, 1.0])] if not k else [])
    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["x@0"], name="Id@0"),
         helper.make_node("If", ["c"], ["y"], name="If@0", then_branch=branch(1), else_branch=branch(0))],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
              helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = np.array([1.0, 2.0], np.float32)
    before = [ort.InferenceSession(model.SerializeToString()).run(None, {"x": x, "c": np.array(c)})[0]
              for c in (True, False)]
    renames = tf_safe_names(model)
    assert {"x@0", "Id@0", "If@0", "Add@1", "Add@0"} <= set(renames)
    assert all(_TF_NAME.match(n.name) for g in _graphs(model.graph) for n in g.node)
    onnx.checker.check_model(model)
    after = [ort.InferenceSession(model.SerializeToString()).run(None, {"x": x, "c": np.array(c)})[0]
             for c in (True, False)]
    np.testing.assert_array_equal(before, after)
