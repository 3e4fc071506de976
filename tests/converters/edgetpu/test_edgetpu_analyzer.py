"""The Edge TPU mapping prediction: against Coral's compiled pairs, and on synthetic models."""

import json
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[4] / "shared"
CORAL = SHARED / "fixtures" / "coral"
PAIRS = {
    "mobilenet_v1_0.25_128_quant": [],
    "keras_lstm_mnist_ptq": [],
    "split_concat": [],
    "posenet_mobilenet_v1_075_353_481_16_quant_decoder": ["PosenetDecoderOp"],
}


@pytest.fixture(scope="session")
def coral():
    if not (CORAL / "mobilenet_v1_0.25_128_quant.tflite").is_file():
        pytest.skip(f"shared Coral fixtures not found at {CORAL} (they live beside the checkout)")
    return CORAL


@pytest.mark.parametrize("stem", sorted(PAIRS))
def test_prediction_agrees_with_compiled_pair(coral, stem):
    from converters.edgetpu.analyzer import compare_with_compiled

    c = compare_with_compiled(coral / f"{stem}.tflite", coral / f"{stem}_edgetpu.tflite")
    print(json.dumps(c))   # predicted vs actual, per model (pytest -s shows it)
    assert c["actual_cpu_ops"] == PAIRS[stem]          # the ground truth as the README states it
    assert c["predicted_cpu_ops"] == c["actual_cpu_ops"]
    assert c["predicted_mapped"] == c["actual_mapped"]
    assert c["predicted_edgetpu_subgraphs"] == c["actual_edgetpu_subgraphs"] == 1
    assert c["agree"]


def test_compiled_posenet_boundary(coral):
    from converters.edgetpu.analyzer import analyze_compiled

    a = analyze_compiled(coral / "posenet_mobilenet_v1_075_353_481_16_quant_decoder_edgetpu.tflite")
    assert a["edgetpu_subgraphs"] == 1
    assert [o["op"] for o in a["ops_outside"]] == ["PosenetDecoderOp"]
    ins = [b for b in a["boundary"] if b["direction"] == "in"]
    outs = [b for b in a["boundary"] if b["direction"] == "out"]
    assert [(b["tensor"], b["peer"]) for b in ins] == [("sub_2", "model input")]
    assert sorted(b["shape"][-1] for b in outs) == [17, 34, 64]
    assert all("PosenetDecoderOp" in b["peer"] for b in outs)


def test_lstm_state_tensors_cross_the_boundary(coral):
    from converters.edgetpu.analyzer import analyze_compiled

    a = analyze_compiled(coral / "keras_lstm_mnist_ptq_edgetpu.tflite")
    assert sorted(b["dtype"] for b in a["boundary"] if b["direction"] == "in") == ["INT16", "INT8", "UINT8"]


def test_prediction_on_compiled_model_is_refused(coral):
    from converters.edgetpu.analyzer import predict_mapping
    from edge.errors import InputError

    with pytest.raises(InputError, match="already compiled"):
        predict_mapping(coral / "split_concat_edgetpu.tflite")


# -- synthetic models built with TF --------------------------------------------------------

def _int8(model, shape, float_io=False, fallback=False):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.random(shape, dtype=np.float32)] for _ in range(8))
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if fallback:
        ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
    conv.target_spec.supported_ops = ops
    if not float_io:
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    return conv.convert()


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    tf = pytest.importorskip("tensorflow")
    folder = tmp_path_factory.mktemp("edgetpu-synthetic")
    L = tf.keras.layers
    out = {}

    # a float op (SIN has no int8 kernel, so it stays float between DEQUANTIZE/QUANTIZE) in the
    # middle of one branch; the other branch never reads it
    x = tf.keras.Input((8, 8, 3), batch_size=1)
    y = L.Conv2D(4, 3, padding="same")(x)
    a = L.Conv2D(4, 1)(L.Lambda(tf.math.sin)(y))
    b = L.Conv2D(4, 1)(y)
    out["float_middle"] = _int8(tf.keras.Model(x, [a, b]), (1, 8, 8, 3), fallback=True)

    # float input and output: QUANTIZE first (CPU prefix), DEQUANTIZE last (CPU suffix)
    x = tf.keras.Input((8, 8, 3), batch_size=1)
    out["float_io"] = _int8(tf.keras.Model(x, L.Conv2D(4, 3)(L.Conv2D(4, 3)(x))), (1, 8, 8, 3), float_io=True)

    # dynamic batch
    x = tf.keras.Input((8, 8, 3))
    out["dynamic"] = _int8(tf.keras.Model(x, L.Conv2D(4, 3)(x)), (1, 8, 8, 3))

    # a rank-5 tensor whose outer dimensions are > 1
    x = tf.keras.Input((8, 8, 4), batch_size=1)
    y5 = L.Reshape((2, 4, 8, 4))(L.Conv2D(4, 1)(x))
    y = L.Reshape((8, 8, 4))(L.Permute((2, 1, 3, 4))(y5))     # a TRANSPOSE on rank-5 tensors
    out["rank5"] = _int8(tf.keras.Model(x, L.Conv2D(4, 1)(y)), (1, 8, 8, 4))

    paths = {}
    for name, data in out.items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(data)
    return paths


def _rows(pred):
    return [(r["op"], r["placement"], r["segment"], r["status"]) for r in pred["ops"]]


def test_float_op_in_one_branch_sends_only_its_descendants_to_the_cpu(synthetic):
    from converters.edgetpu import ops as T
    from converters.edgetpu.analyzer import predict_mapping
    from edge.tflite_model import TFLiteModel

    model = TFLiteModel.load(synthetic["float_middle"])
    pred = predict_mapping(model)
    rows = {r["index"]: r for r in pred["ops"]}
    sin = next(r for r in pred["ops"] if r["op"] == "SIN")
    assert sin["placement"] == "cpu" and sin["segment"] == "suffix" and sin["status"] == T.NOT_SUPPORTED
    deq = next(r for r in pred["ops"] if r["op"] == "DEQUANTIZE")
    assert deq["placement"] == "cpu" and deq["status"] in (T.NOT_SUPPORTED, T.UNSUPPORTED_TYPE)
    # data flow: the conv that reads SIN's output is on the CPU, the sibling conv is not
    g = model.main
    producer = {t: op.index for op in g.operators for t in op.outputs}
    convs = [op for op in g.operators if op.opcode == "CONV_2D"]
    first = convs[0]
    below_sin = [c for c in convs if any(rows.get(producer.get(t)) and rows[producer[t]]["placement"] == "cpu"
                                         for t in c.inputs if t >= 0)]
    sibling = [c for c in convs if c is not first and c not in below_sin]
    assert rows[first.index]["placement"] == "edgetpu"
    assert below_sin and all(rows[c.index]["status"] == T.MORE_THAN_ONE_SUBGRAPH for c in below_sin)
    assert sibling and all(rows[c.index]["placement"] == "edgetpu" for c in sibling)
    assert pred["edgetpu_subgraphs"] == 1


def test_unsupported_first_op_is_a_cpu_prefix(synthetic):
    from converters.edgetpu import ops as T
    from converters.edgetpu.analyzer import predict_mapping

    pred = predict_mapping(synthetic["float_io"])
    rows = _rows(pred)
    assert rows[0] == ("QUANTIZE", "cpu", "prefix", T.UNSUPPORTED_TYPE)
    assert rows[-1] == ("DEQUANTIZE", "cpu", "suffix", T.UNSUPPORTED_TYPE)
    assert [r[1] for r in rows[1:-1]] == ["edgetpu"] * (len(rows) - 2)
    assert pred["mapped"] == len(rows) - 2


def test_dynamic_shape_is_predicted_and_refused_by_the_precheck(synthetic):
    from converters.edgetpu import ops as T
    from converters.edgetpu.analyzer import predict_mapping
    from converters.edgetpu.compile import precheck
    from edge.errors import InputError
    from edge.tflite_model import TFLiteModel

    pred = predict_mapping(synthetic["dynamic"])
    assert pred["mapped"] == 0 and all(r["status"] == T.DYNAMIC_SHAPE for r in pred["ops"])
    with pytest.raises(InputError, match="dynamic shape"):
        precheck(TFLiteModel.load(synthetic["dynamic"]))


def test_rank5_tensor_is_unsupported_rank(synthetic):
    from converters.edgetpu import ops as T
    from converters.edgetpu.analyzer import predict_mapping

    pred = predict_mapping(synthetic["rank5"])
    rows = _rows(pred)
    assert [r[1] for r in rows if r[0] == "CONV_2D"] == ["edgetpu", "cpu"]
    add = next(r for r in rows if r[0] == "TRANSPOSE")
    assert add[1:] == ("cpu", "suffix", T.UNSUPPORTED_RANK)
    assert all(r[1] == "cpu" for r in rows[rows.index(add):])
    assert any(r[0] == "RESHAPE" and r[3] == T.UNSUPPORTED_RANK for r in rows)


def test_min_runtime_version_leaves_newer_ops_on_cpu(coral):
    from converters.edgetpu.analyzer import predict_mapping

    pred = predict_mapping(coral / "keras_lstm_mnist_ptq.tflite", min_runtime_version=12)
    assert pred["ops"][0]["op"] == "QUANTIZE" and pred["ops"][0]["segment"] == "prefix"
    assert "needs Edge TPU runtime >= 13" in pred["ops"][0]["details"][0]


def test_op_table_is_registered_per_op():
    from converters.edgetpu.ops import SUPPORTED_OPS, edgetpu_op

    assert SUPPORTED_OPS["CONV_2D"].name == "Conv2d"
    assert SUPPORTED_OPS["UNIDIRECTIONAL_SEQUENCE_LSTM"].runtime == 14
    assert "DEQUANTIZE" not in SUPPORTED_OPS and "HARD_SWISH" not in SUPPORTED_OPS
    with pytest.raises(RuntimeError, match="two Edge TPU entries"):
        edgetpu_op(["CONV_2D"], "again")(lambda ctx: [])


# -- the inspect command -------------------------------------------------------------------

def test_inspect_cli_text_and_json(coral, capsys):
    from edgeport.cli import main

    assert main(["inspect", str(coral / "posenet_mobilenet_v1_075_353_481_16_quant_decoder.tflite"),
                 "--edgetpu"]) == 0
    out = capsys.readouterr().out
    assert "tflite-int8" in out and "37 of 38 ops would map to the Edge TPU" in out
    assert "#37 PosenetDecoderOp (suffix): Operation is working on an unsupported data type" in out
    assert main(["inspect", str(coral / "posenet_mobilenet_v1_075_353_481_16_quant_decoder_edgetpu.tflite"),
                 "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["format"] == "edgetpu" and d["edgetpu_compiled"]["edgetpu_subgraphs"] == 1
    assert d["inputs"][0]["shape"] == [1, 353, 481, 3] and d["inputs"][0]["dtype"] == "UINT8"
    assert d["op_counts"] == {"PosenetDecoderOp": 1, "edgetpu-custom-op": 1}


def test_inspect_rejects_non_tflite(tmp_path, capsys):
    from edgeport.cli import main

    f = tmp_path / "x.onnx"
    f.write_bytes(b"\x08\x07\x12\x04test")
    assert main(["inspect", str(f)]) == 2
    assert "inspect reads TFLite models" in capsys.readouterr().err


# -- where compiler 16.0 departs from (or makes precise) Coral's table -------------

def test_float_custom_op_reports_unsupported_data_type(coral):
    """PosenetDecoderOp (float poses) is what the compiler calls an unsupported data type."""
    from converters.edgetpu import ops as T
    from converters.edgetpu.analyzer import predict_mapping

    pred = predict_mapping(coral / "posenet_mobilenet_v1_075_353_481_16_quant_decoder.tflite")
    cpu = [r for r in pred["ops"] if r["placement"] == "cpu"]
    assert [(r["op"], r["status"]) for r in cpu] == [("PosenetDecoderOp", T.UNSUPPORTED_TYPE)]
    assert "FLOAT32" in cpu[0]["details"][0]


def _as_custom(data, opcode_name, custom_code):
    """The model with every `opcode_name` op turned into the custom op `custom_code`."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    m = s.ModelT.InitFromObj(s.Model.GetRootAsModel(bytearray(data), 0))
    code = getattr(s.BuiltinOperator, opcode_name)
    for oc in m.operatorCodes:
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code:
            oc.builtinCode = oc.deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
            oc.customCode = custom_code
    for op in m.subgraphs[0].operators:
        op.builtinOptionsType, op.builtinOptions = 0, None
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@pytest.fixture(scope="session")
def rules(tmp_path_factory):
    """One tiny int8 model per rule (sizes as in the compiled models the rules come from)."""
    tf = pytest.importorskip("tensorflow")
    folder = tmp_path_factory.mktemp("edgetpu-rules")
    L = tf.keras.layers
    out = {}

    def resize(hw_in, hw_out, method="bilinear", align=False, ch=4):
        x = tf.keras.Input((*hw_in, ch), batch_size=1)
        y = L.Conv2D(ch, 1)(x)
        if method == "bilinear":
            y = L.Lambda(lambda t: tf.compat.v1.image.resize_bilinear(t, hw_out, align_corners=align))(y)
        else:
            y = L.Lambda(lambda t: tf.compat.v1.image.resize_nearest_neighbor(t, hw_out, align_corners=align))(y)
        return _int8(tf.keras.Model(x, L.Conv2D(ch, 1)(y)), (1, *hw_in, ch))

    out["resize_1_to_33_align"] = resize((1, 1), (33, 33), align=True)        # DeepLab image pooling
    out["resize_33_to_513_align"] = resize((33, 33), (513, 513), align=True, ch=2)  # DeepLab output
    out["resize_2x"] = resize((8, 8), (16, 16))                                # FPN / UpSampling2D
    out["resize_nn_2x"] = resize((8, 8), (16, 16), method="nearest")
    out["resize_nn_1_to_9_align"] = resize((1, 1), (9, 9), method="nearest", align=True)

    x = tf.keras.Input((4, 4, 3), batch_size=1)
    y = L.Lambda(lambda t: tf.tile(t, [1, 2, 1, 1]))(L.Conv2D(3, 1)(x))
    out["tile"] = _int8(tf.keras.Model(x, L.Conv2D(3, 1)(y)), (1, 4, 4, 3))

    x = tf.keras.Input((8,), batch_size=1)
    out["fc_1d"] = _int8(tf.keras.Model(x, L.Dense(4)(L.Dense(6)(x))), (1, 8))
    x = tf.keras.Input((4, 8), batch_size=1)                  # Dense on [1, 4, 8]: keep_num_dims
    out["fc_rows"] = _int8(tf.keras.Model(x, L.Dense(6)(x)), (1, 4, 8))

    # a float op in the middle (SIN), then made a custom op: a float custom op
    x = tf.keras.Input((8, 8, 3), batch_size=1)
    y = L.Conv2D(4, 1)(L.Lambda(tf.math.sin)(L.Conv2D(4, 1)(x)))
    out["float_custom"] = _as_custom(_int8(tf.keras.Model(x, y), (1, 8, 8, 3), fallback=True),
                                     "SIN", "MyFloatOp")
    paths = {}
    for name, data in out.items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(data)
    return paths


def _placements(pred, opcode):
    return [(r["placement"], r["status"]) for r in pred["ops"] if r["op"] == opcode]


@pytest.mark.parametrize("name,expect_cpu", [
    ("resize_1_to_33_align", True), ("resize_33_to_513_align", True), ("resize_2x", False),
    ("resize_nn_2x", False), ("resize_nn_1_to_9_align", True)])
def test_resize_size_limits(rules, name, expect_cpu):
    from converters.edgetpu import ops as T
    from converters.edgetpu.analyzer import predict_mapping

    pred = predict_mapping(rules[name])
    opcode = "RESIZE_NEAREST_NEIGHBOR" if "_nn_" in name else "RESIZE_BILINEAR"
    rows = [r for r in pred["ops"] if r["op"] == opcode]
    assert len(rows) == 1, pred["ops"]
    if expect_cpu:
        assert (rows[0]["placement"], rows[0]["status"]) == ("cpu", T.UNSPECIFIED), rows
        assert "compiler 16.0" in rows[0]["details"][0]
        # everything downstream of the resize stays on the CPU too
        after = [r for r in pred["ops"] if r["index"] > rows[0]["index"]]
        assert after and all(r["placement"] == "cpu" for r in after)
    else:
        assert pred["mapped"] == pred["total"], pred["ops"]


def test_resize_options_are_read(rules):
    from converters.edgetpu.ops import read_options
    from edge.tflite_model import TFLiteModel

    for name, opcode, align in (("resize_1_to_33_align", "RESIZE_BILINEAR", True),
                                ("resize_2x", "RESIZE_BILINEAR", False),
                                ("resize_nn_1_to_9_align", "RESIZE_NEAREST_NEIGHBOR", True)):
        m = TFLiteModel.load(rules[name])
        op = next(o for o in m.main.operators if o.opcode == opcode)
        assert read_options(m, 0, op.index, opcode)["align_corners"] is align


def test_tile_is_mapped_although_not_in_coral_table(rules):
    from converters.edgetpu.analyzer import predict_mapping
    from converters.edgetpu.ops import KNOWN_DEPARTURES

    pred = predict_mapping(rules["tile"])
    assert _placements(pred, "TILE") == [("edgetpu", "Mapped to Edge TPU")]
    assert pred["mapped"] == pred["total"]
    assert any(d["op"] == "TILE" and d["evidence"] for d in KNOWN_DEPARTURES)
    # the op table's runtime column still applies
    assert _placements(predict_mapping(rules["tile"], min_runtime_version=13), "TILE")[0][0] == "cpu"


def test_fully_connected_output_must_be_one_dimensional(rules):
    from converters.edgetpu import ops as T
    from converters.edgetpu.analyzer import predict_mapping
    from edge.tflite_model import TFLiteModel

    pred = predict_mapping(rules["fc_1d"])
    assert _placements(pred, "FULLY_CONNECTED") == [("edgetpu", T.MAPPED)] * 2
    m = TFLiteModel.load(rules["fc_rows"])
    fc = next(o for o in m.main.operators if o.opcode == "FULLY_CONNECTED")
    out_shape = list(m.main.tensors[fc.outputs[0]].shape)
    assert out_shape[-2] == 4, out_shape       # four rows, whatever the converter's keep_num_dims
    rows = [r for r in predict_mapping(m)["ops"] if r["op"] == "FULLY_CONNECTED"]
    assert [(r["placement"], r["status"]) for r in rows] == [("cpu", T.UNSPECIFIED)]
    assert "not one-dimensional" in rows[0]["details"][0]


def test_float_custom_op_in_a_tiny_model(rules):
    from converters.edgetpu import ops as T
    from converters.edgetpu.analyzer import predict_mapping

    pred = predict_mapping(rules["float_custom"])
    assert _placements(pred, "MyFloatOp") == [("cpu", T.UNSUPPORTED_TYPE)]
