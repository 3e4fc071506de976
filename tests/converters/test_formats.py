"""Format detection reads content, never extensions: every format edgeport knows, and garbage."""

import os
import shutil
from pathlib import Path

import pytest

from converters import formats
from converters.formats import detect_format
from edge.errors import InputError, ModelFormatError

SHARED = Path(__file__).resolve().parents[3] / "shared"
CORAL = SHARED / "fixtures" / "coral"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One tiny model per format, saved under misleading names (detection must not care)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import onnx
    import tensorflow as tf
    from onnx import TensorProto, helper

    d = tmp_path_factory.mktemp("formats")
    inp = keras.Input((4,), name="x")
    m = keras.Model(inp, keras.layers.Dense(2)(inp))
    m.save(d / "k.keras")
    shutil.copy(d / "k.keras", d / "keras_named.bin")
    m.save(d / "legacy.h5")
    m.export(os.fspath(d / "sm"), verbose=False)
    tfl = tf.lite.TFLiteConverter.from_keras_model(m).convert()
    (d / "float.data").write_bytes(tfl)
    graph = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "g",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 2])])
    onnx.save(helper.make_model(graph, producer_name="edgeport-test"), d / "relu.model")
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = os.fspath(d / "relu.ortfile")
    so.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(os.fspath(d / "relu.model"), so, providers=["CPUExecutionProvider"])
    return d


def test_keras_and_h5(models):
    assert detect_format(models / "k.keras") == formats.KERAS
    assert detect_format(models / "keras_named.bin") == formats.KERAS
    assert detect_format(models / "legacy.h5") == formats.KERAS


def test_savedmodel_folder(models):
    assert detect_format(models / "sm") == formats.SAVEDMODEL


def test_tflite_float(models):
    assert detect_format(models / "float.data") == formats.TFLITE


def test_onnx_and_ort(models):
    assert detect_format(models / "relu.model") == formats.ONNX
    assert detect_format(models / "relu.ortfile") == formats.ORT


def test_coral_models():
    if not CORAL.is_dir():
        pytest.skip(f"Coral fixtures not found at {CORAL}")
    assert detect_format(CORAL / "mobilenet_v1_0.25_128_quant.tflite") == formats.TFLITE_INT8
    assert detect_format(CORAL / "mobilenet_v1_0.25_128_quant_edgetpu.tflite") == formats.EDGETPU


def test_torch_formats(tmp_path):
    torch = pytest.importorskip("torch")
    m = torch.nn.Linear(3, 2)
    torch.jit.save(torch.jit.script(m), tmp_path / "a.bin")
    assert detect_format(tmp_path / "a.bin") == formats.TORCHSCRIPT
    torch.export.save(torch.export.export(m, (torch.zeros(1, 3),)), tmp_path / "b.bin")
    assert detect_format(tmp_path / "b.bin") == formats.TORCH_EXPORT
    torch.save(m.state_dict(), tmp_path / "c.pt")
    with pytest.raises(InputError, match="--torch-model"):
        detect_format(tmp_path / "c.pt")


def test_coreml_package(tmp_path):
    pkg = tmp_path / "x.mlpackage"
    pkg.mkdir()
    (pkg / "Manifest.json").write_text("{}")
    assert detect_format(pkg) == formats.COREML


def test_garbage_empty_missing_and_folders(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"this is not a model at all" * 4)
    with pytest.raises(ModelFormatError):
        detect_format(tmp_path / "junk.onnx")
    (tmp_path / "empty.tflite").write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty"):
        detect_format(tmp_path / "empty.tflite")
    with pytest.raises(InputError, match="does not exist"):
        detect_format(tmp_path / "nope.tflite")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="folder"):
        detect_format(tmp_path / "plain")
    (tmp_path / "z.zip").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(ModelFormatError):
        detect_format(tmp_path / "z.zip")


def test_truncated_tflite(models, tmp_path):
    data = (models / "float.data").read_bytes()
    (tmp_path / "cut.tflite").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFormatError):
        detect_format(tmp_path / "cut.tflite")


def test_output_suffixes_are_distinct():
    suffixes = list(formats.OUTPUT_SUFFIX.values())
    assert len(set(suffixes)) == len(suffixes)
    assert formats.OUTPUT_SUFFIX[formats.TFLITE_INT8] == "_int8.tflite"


def _relu_graph():
    from onnx import TensorProto, helper

    return helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "g",
                             [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 2])],
                             [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 2])])


def _onnx_variants():
    """ONNX files as different exporters write them: (name, bytes). Protobuf merges
    concatenated messages, so field order is set by concatenating one-field messages."""
    import onnx
    from onnx import helper

    def model(**kw):
        return helper.make_model(_relu_graph(), **kw)

    def part(**fields):
        return onnx.ModelProto(**fields).SerializeToString()

    m = model(producer_name="")
    opset = list(m.opset_import)
    return [
        ("empty_producer", model(producer_name="", producer_version="").SerializeToString()),
        ("no_producer_fields", part(ir_version=8, graph=_relu_graph(), opset_import=opset)),
        ("opset_import_first", part(opset_import=opset) + part(ir_version=8)
         + part(graph=_relu_graph())),
        ("doc_string_first", part(doc_string="exported by a tool") + part(ir_version=7)
         + part(opset_import=opset, graph=_relu_graph())),
        ("graph_first", part(graph=_relu_graph()) + part(ir_version=9, opset_import=opset)),
        ("large_ir_version", part(ir_version=300, producer_name="", opset_import=opset,
                                  graph=_relu_graph())),
        ("domain_and_model_version", part(ir_version=8, domain="ai.x", model_version=3,
                                          opset_import=opset, graph=_relu_graph())),
        ("metadata_after_graph", part(ir_version=8, opset_import=opset, graph=_relu_graph())
         + part(metadata_props=[onnx.StringStringEntryProto(key="k", value="")])),
    ]


@pytest.mark.parametrize("case", [c for c, _ in _onnx_variants()])
@pytest.mark.parametrize("name", ["model.onnx", "model.bin", "model.mlmodel"])
def test_onnx_from_many_exporters_is_onnx(tmp_path, case, name):
    """Field order and empty optional fields never make an ONNX file look like Core ML, even
    under a misleading extension; onnx itself reads each file."""
    import onnx

    data = dict(_onnx_variants())[case]
    p = tmp_path / name
    p.write_bytes(data)
    onnx.load(os.fspath(p))  # a real ModelProto
    assert detect_format(p) == formats.ONNX


@pytest.fixture(scope="module")
def mlmodel(tmp_path_factory):
    """A real neural-network .mlmodel, written by coremltools (works without macOS)."""
    ct = pytest.importorskip("coremltools")
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    b = NeuralNetworkBuilder([("x", datatypes.Array(2))], [("y", datatypes.Array(2))])
    b.add_activation("relu", "RELU", "x", "y")
    p = tmp_path_factory.mktemp("mlmodel") / "relu.mlmodel"
    ct.utils.save_spec(b.spec, os.fspath(p))
    return p


@pytest.mark.parametrize("name", ["relu.mlmodel", "relu.bin", "relu.onnx"])
@pytest.mark.parametrize("short_description", ["", "a model"])
def test_mlmodel_is_coreml(tmp_path, mlmodel, name, short_description):
    import coremltools as ct

    spec = ct.utils.load_spec(os.fspath(mlmodel))
    spec.description.metadata.shortDescription = short_description
    p = tmp_path / name
    p.write_bytes(spec.SerializeToString())
    assert detect_format(p) == formats.COREML


def test_not_a_protobuf_is_refused(tmp_path):
    p = tmp_path / "x.onnx"
    p.write_bytes(b"\x08\x07\x12\x05ab")  # a length past the end
    with pytest.raises(ModelFormatError):
        detect_format(p)


def test_check_reads_an_onnx_with_empty_producer_as_onnx(tmp_path, capsys):
    """paddle2onnx's case: `check` on it passes as ONNX (it printed FAIL, read as Core ML)."""
    import json

    from tests.conftest import run_cli

    p = tmp_path / "paddle.onnx"
    p.write_bytes(dict(_onnx_variants())["empty_producer"])
    code, out, err = run_cli(capsys, "check", p, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["format"] == "onnx" and doc["passed"] is True, (out, err)
