"""Bad inputs across every command: one clear line, a documented exit code, no
traceback, no partial output, inputs byte-for-byte unchanged.

Each case runs in its own folder holding copies of every input (broken models, odd images,
label files, stand-in compilers). The harness checks, for every case:
  * the exit code (2 usage or input error, 1 failure, 0 for odd-but-valid inputs);
  * exactly one `error: ...` line on stderr, matching the case's pattern (a case may expect
    one `warning: ...` line instead);
  * no `Traceback` anywhere in the output;
  * the sha256 of every file in the folder is unchanged, and no file appeared in it other
    than the case's expected outputs (so no partial or temp output is left behind).
"""

import hashlib
import io
import os
import re
import shutil
import stat
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import DATA, run_cli

SHARED = Path(__file__).resolve().parents[3] / "shared"
CORAL = SHARED / "fixtures" / "coral"
PY = sys.executable


# -- inputs ----------------------------------------------------------------------------------
def _png(size, color, mode="RGB"):
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")
    return buf.getvalue()


def _huge_png(width=20000, height=20000):
    """A PNG header claiming 400 M pixels (with a tiny, incomplete body): a decompression bomb."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _images():
    """Odd images of known color: the tiny color models must still classify them right."""
    import numpy as np
    from PIL import Image

    red, _gray = (230, 20, 20), (128, 128, 128)
    out = {}
    # 16-bit grayscale PNG holding a mid gray (32896 / 65535 = 128 / 255).
    im16 = Image.fromarray(np.full((20, 24), 32896, np.uint16))
    buf = io.BytesIO()
    im16.save(buf, "PNG")
    out["gray16.png"] = buf.getvalue()
    buf = io.BytesIO()
    Image.new("RGB", (24, 20), red).convert("CMYK").save(buf, "JPEG", quality=95)
    out["red_cmyk.jpg"] = buf.getvalue()
    buf = io.BytesIO()
    Image.new("RGB", (24, 20), red).convert("P", palette=Image.ADAPTIVE).save(buf, "PNG")
    out["red_palette.png"] = buf.getvalue()
    out["gray_l.png"] = _png((24, 20), 128, "L")
    # RGBA: red where opaque, transparent elsewhere (composited on white -> still mostly red).
    rgba = Image.new("RGBA", (24, 20), red + (255,))
    rgba.paste((0, 0, 0, 0), (0, 0, 4, 4))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    out["red_rgba.png"] = buf.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    buf = io.BytesIO()
    Image.new("RGB", (30, 12), red).save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    out["red_exif6.jpg"] = buf.getvalue()
    out["red.png"] = _png((24, 20), red)
    png = _png((64, 48), red)
    out["truncated.png"] = png[: len(png) // 2]
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "JPEG")
    out["truncated.jpg"] = buf.getvalue()[:600]
    out["huge.png"] = _huge_png()
    out["big.png"] = _huge_png(11000, 11000)  # 121 M pixels: over the limit, under Pillow's own
    out["notes.png"] = b"these are my notes, not a picture\n"
    return out


def _flip(data, at, bit=0):
    data = bytearray(data)
    data[at] ^= 1 << bit
    return bytes(data)


def _onnx_model(dims=None):
    from onnx import TensorProto, helper

    if dims:  # one Relu over an input of the given (absurd) shape
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "big", [x], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        return model.SerializeToString()

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 16, 16, 3])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2], keepdims=0),
                               helper.make_node("Softmax", ["m"], ["probs"], axis=1)],
                              "tiny", [x], [y])
    model = helper.make_model(graph, producer_name="edgeport-tests",
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _damaged_tflite():
    """color_float.tflite rewritten with the official flatbuffers object API, one defect each."""
    try:
        import flatbuffers
        import numpy as np

        from converters.metadata import _tflite_schema

        schema = _tflite_schema()
    except Exception:
        return {}
    good = (DATA / "color_float.tflite").read_bytes()

    def mutate(fn):
        m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(good), 0))
        fn(m)
        b = flatbuffers.Builder(len(good) + 1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    def input_shape(shape):
        def fn(m):
            g = m.subgraphs[0]
            g.tensors[g.inputs[0]].shape = np.array(shape, np.int32)
        return fn

    def no_outputs(m):
        m.subgraphs[0].outputs = np.array([], np.int32)

    def far_buffer(m):
        b = next(b for b in m.buffers if b.data is not None and len(b.data))
        b.data, b.offset, b.size = None, 1, 10 ** 12

    return {"huge.tflite": mutate(input_shape([1, 46341, 46341, 3])),
            "zero.tflite": mutate(input_shape([1, 0, 8, 3])),
            "noout.tflite": mutate(no_outputs), "bigbuf.tflite": mutate(far_buffer)}


def _ort_model(onnx_bytes, folder):
    import onnxruntime as ort

    (folder / "m.onnx").write_bytes(onnx_bytes)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(folder / "m.ort")
    opts.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(folder / "m.onnx"), opts, providers=["CPUExecutionProvider"])
    return (folder / "m.ort").read_bytes()


def _keras_zip(config=b'{"class_name": "Functional"}'):
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("metadata.json", b'{"keras_version": "3.0.0"}')
        z.writestr("config.json", config)
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    return buf.getvalue()


STANDIN = """#!{python}
# STAND-IN for edgetpu_compiler written by edgeport's bad-input tests: it misbehaves.
import os, signal, sys, time
args = sys.argv[1:]
out_dir = args[args.index("--out_dir") + 1] if "--out_dir" in args else "."
model = args[-1]
stem = os.path.basename(model)[:-len(".tflite")]
# A half-written output first: edgeport must never promote it.
with open(os.path.join(out_dir, stem + "_edgetpu.tflite"), "wb") as f:
    f.write(open(model, "rb").read()[:100])
print("Edge TPU Compiler version 16.0.384591198", flush=True)
if "{mode}" == "crash":
    os.kill(os.getpid(), signal.SIGSEGV)
if "{mode}" == "hang":
    time.sleep(120)
sys.exit(3)
"""


@pytest.fixture(scope="session")
def inputs(tmp_path_factory):
    """A folder of every input file the cases copy from."""
    root = tmp_path_factory.mktemp("bad_inputs_src")
    for name in ("float", "uint8", "int8"):
        shutil.copy(DATA / f"color_{name}.tflite", root / f"color_{name}.tflite")
    good = (DATA / "color_float.tflite").read_bytes()
    files = {
        "empty.tflite": b"",
        "truncated.tflite": good[: len(good) // 2],
        "bitflip.tflite": _flip(good, 1, 3),  # the root table offset now points past the end
        "wordflip.tflite": good[:4] + good[4:8] + bytes([0xFF, 0xFF, 0xFF, 0x7F]) + good[12:],
        "labels4.txt": b"red\ngreen\nblue\ngray\n",
        "labels2.txt": b"red\ngreen\n",
        "labels3.txt": b"red\ngreen\nblue\n",
        "labels7.txt": b"red\ngreen\nblue\ngray\ncyan\nmagenta\nyellow\n",
        "labels_latin1.txt": "rouge\nvert\nbleu\ngris\u00e9\n".encode("latin-1"),
        "labels_dup.txt": b"0 red\n1 green\n1 blue\n3 gray\n",
        "labels_bom.txt": "\ufeffred\ngreen\nblue\ngray\n".encode("utf-8"),
        "labels_esc.txt": b"r\x1b[2Jed\x00\ngreen\nblue\ngray\n",
        "empty.onnx": b"",
        "empty.ort": b"",
        "empty.keras": b"",
        "photo_named.tflite": _png((24, 20), (230, 20, 20)),
        "image_named.onnx": _png((24, 20), (230, 20, 20)),
        "model_named.jpg": good,
        "not_a_folder": b"a file where a folder is expected\n",
        "keras_bad_config.keras": _keras_zip(b'{"class_name": "Functional", "config": {"layers": [}'),
    }
    keras = _keras_zip()
    files["model.keras"] = keras  # detected as Keras (never loaded by the cases using it)
    files["truncated.keras"] = keras[: len(keras) // 2]
    files["bitflip.keras"] = _flip(keras, len(keras) - 10, 5)  # end-of-central-directory damaged
    files.update(_images())
    try:
        onnx_bytes = _onnx_model()
        files["good.onnx"] = onnx_bytes
        files["truncated.onnx"] = onnx_bytes[: len(onnx_bytes) // 2]
        files["bitflip.onnx"] = _flip(onnx_bytes, len(onnx_bytes) // 2, 7)
        ort_dir = tmp_path_factory.mktemp("ort")
        ort_bytes = _ort_model(onnx_bytes, ort_dir)
        # (not truncated.ort: that is the name `convert truncated.onnx --to ort` would write)
        files["cut.ort"] = ort_bytes[: len(ort_bytes) // 2]
        files["flipped.ort"] = _flip(ort_bytes, 0, 4)
        files["big.onnx"] = _onnx_model(dims=[1, 2 ** 40])
    except ImportError:
        pass
    files.update(_damaged_tflite())
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "empty_folder").mkdir()
    if "good.onnx" in files:  # a folder of models, two of them damaged
        (root / "mixed").mkdir()
        for name in ("good.onnx", "empty.onnx", "truncated.tflite"):
            (root / "mixed" / name).write_bytes(files[name])
    (root / "labels_folder").mkdir()
    (root / "model_folder.tflite").mkdir()
    for mode in ("crash", "hang", "fail"):
        b = root / f"bin_{mode}"
        b.mkdir()
        script = b / "edgetpu_compiler"
        script.write_text(STANDIN.format(python=PY, mode=mode))
        script.chmod(0o755)
    (root / "bin_empty").mkdir()
    if (CORAL / "mobilenet_v1_0.25_128_quant_edgetpu.tflite").is_file():
        shutil.copy(CORAL / "split_concat_edgetpu.tflite", root / "compiled_edgetpu.tflite")
        shutil.copy(CORAL / "mobilenet_v1_0.25_128_quant_edgetpu.tflite", root / "mobilenet_edgetpu.tflite")
    return root


# -- cases -----------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    argv: list                # "{w}" in an item is replaced by the case's folder
    code: int
    pattern: str              # regex the single error (or warning) line must match
    outputs: tuple = ()       # names that may appear in the folder
    env: dict = field(default_factory=dict)          # "{w}" replaced too
    hide: tuple = ()          # modules made unimportable (a missing optional dependency)
    needs: tuple = ()         # input files the case needs (skip when absent, e.g. no ../shared)
    stdout: str = None        # regex stdout must match (exit-0 cases)
    warning: bool = False     # expect one `warning:` line instead of an `error:` line
    report: bool = False      # a report command (check, validate): the verdict is a stdout line
    setup: object = None      # callable(w): makes what cannot be copied (FIFOs, devices, sparse files)
    root: bool = False        # needs root (mknod)


C = Case
CLASSIFY = ["classify", "-m", "{w}/color_float.tflite", "-c", "1", "-i"]
CLASSIFY_L = ["classify", "-m", "{w}/color_float.tflite", "-c", "1", "-i", "{w}/red.png", "-l"]
NO_TFLITE = ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime",
             "tflite_runtime.interpreter", "tensorflow")
CONVERT_TPU = ["convert", "{w}/color_uint8.tflite", "--to", "edgetpu", "--compiler", "local",
               "--no-validate"]

CASES = [
    # --- damaged TFLite models, every command that reads one
    C("classify-empty-tflite", CLASSIFY[:2] + ["{w}/empty.tflite", "-i", "{w}/red.png"], 2,
      r"empty|not a TFLite"),
    C("classify-truncated-tflite", CLASSIFY[:2] + ["{w}/truncated.tflite", "-i", "{w}/red.png"], 2,
      r"truncated\.tflite: truncated or corrupt.*download"),
    C("classify-bitflip-tflite", CLASSIFY[:2] + ["{w}/bitflip.tflite", "-i", "{w}/red.png"], 2,
      r"truncated or corrupt|corrupt"),
    C("bench-truncated-tflite", ["bench", "{w}/truncated.tflite", "--runs", "1"], 2, r"truncated or corrupt"),
    C("bench-bitflip-tflite", ["bench", "{w}/wordflip.tflite", "--runs", "1"], 2, r"wordflip\.tflite: .*corrupt"),
    C("inspect-empty-tflite", ["inspect", "{w}/empty.tflite"], 2, r"empty\.tflite is empty \(.*again"),
    C("inspect-bitflip-tflite", ["inspect", "{w}/bitflip.tflite", "--edgetpu"], 2, r"corrupt"),
    C("check-truncated-tflite", ["check", "{w}/truncated.tflite"], 2, r"truncated or corrupt"),
    C("convert-truncated-tflite", ["convert", "{w}/truncated.tflite", "--to", "onnx"], 2,
      r"truncated or corrupt"),
    C("validate-truncated-converted", ["validate", "{w}/color_float.tflite", "{w}/truncated.tflite"], 2,
      r"truncated or corrupt"),
    # --- damaged ONNX / ORT / Keras
    C("convert-empty-onnx", ["convert", "{w}/empty.onnx", "--to", "ort"], 2, r"empty"),
    C("convert-truncated-onnx", ["convert", "{w}/truncated.onnx", "--to", "ort"], 2,
      r"truncated\.onnx", needs=("truncated.onnx",)),
    C("check-bitflip-onnx", ["check", "{w}/bitflip.onnx"], 2, r"bitflip\.onnx", needs=("bitflip.onnx",)),
    C("bench-truncated-onnx", ["bench", "{w}/truncated.onnx", "--runs", "1"], 2, r"onnxruntime cannot load",
      needs=("truncated.onnx",)),
    C("bench-empty-ort", ["bench", "{w}/empty.ort", "--runs", "1"], 2, r"empty|cannot load"),
    C("check-truncated-ort", ["check", "{w}/cut.ort"], 1, r"FAIL onnxruntime session", report=True,
      needs=("cut.ort",)),
    C("bench-bitflip-ort", ["bench", "{w}/flipped.ort", "--runs", "1"], 2, r"onnxruntime cannot load",
      needs=("flipped.ort",)),
    C("convert-empty-keras", ["convert", "{w}/empty.keras", "--to", "onnx"], 2, r"empty"),
    C("convert-truncated-keras", ["convert", "{w}/truncated.keras", "--to", "tflite"], 2,
      r"truncated or damaged|cannot"),
    C("convert-bitflip-keras", ["convert", "{w}/bitflip.keras", "--to", "onnx"], 2, r"bitflip\.keras"),
    C("convert-bad-config-keras", ["convert", "{w}/keras_bad_config.keras", "--to", "onnx"], 2,
      r"keras_bad_config\.keras"),
    C("convert-folder-with-damaged-models", ["convert", "{w}/mixed", "--to", "ort", "-o", "{w}/mixed_out",
                                             "--no-validate"], 2,
      r"empty\.onnx: FAILED: .*is empty|truncated\.tflite: FAILED: .*truncated or corrupt", report=True,
      outputs=("mixed_out/", "mixed_out/good.ort", "mixed_out/good.ort.edgeport.json",
               "mixed_out/good.required_operators.config", "mixed_out/.edgeport-convert.json"),
      stdout=r"(?s)(?=.*empty\.onnx: FAILED)(?=.*truncated\.tflite: FAILED)(?=.*good\.ort)",
      needs=("mixed",)),
    # --- wrong extensions, folders and files swapped
    C("convert-wrong-extension", ["convert", "{w}/image_named.onnx", "--to", "ort"], 2,
      r"cannot tell what kind of model"),
    C("classify-image-named-tflite", CLASSIFY[:2] + ["{w}/photo_named.tflite", "-i", "{w}/red.png"], 2,
      r"not a TFLite model"),
    C("classify-model-named-jpg", CLASSIFY + ["{w}/model_named.jpg"], 2, r"cannot read image"),
    C("classify-model-is-folder", CLASSIFY[:2] + ["{w}/model_folder.tflite", "-i", "{w}/red.png"], 2,
      r"folder"),
    C("classify-image-folder-empty", CLASSIFY + ["{w}/empty_folder"], 2, r"holds no images"),
    C("inspect-folder", ["inspect", "{w}/empty_folder"], 2, r"not a file|folder"),
    C("bench-folder", ["bench", "{w}/empty_folder", "--runs", "1"], 2, r"not a file|folder"),
    C("convert-folder-without-models", ["convert", "{w}/empty_folder", "--to", "onnx"], 2,
      r"holds no model"),
    C("convert-output-is-a-file", ["convert", "{w}/color_float.tflite", "--to", "onnx", "-o",
                                   "{w}/not_a_folder"], 2, r"is a file|not a directory|cannot create"),
    C("convert-missing-source", ["convert", "{w}/nowhere.onnx", "--to", "ort"], 2, r"does not exist"),
    C("eval-images-is-a-file", ["eval", "{w}/color_float.tflite", "--images", "{w}/red.png",
                                "--labels", "{w}/labels4.txt"], 2, r"red\.png"),
    # --- usage errors
    C("convert-unknown-target", ["convert", "{w}/color_float.tflite", "--to", "tensorrt"], 2,
      r"unknown target format 'tensorrt'"),
    C("classify-count-zero", CLASSIFY + ["{w}/red.png", "--count", "0"], 2,
      r"argument -c/--count: '0' is out of range; expected an integer from 1 to 100000"),
    # --- quantization and the Edge TPU
    C("convert-float-tflite-to-edgetpu", ["convert", "{w}/color_float.tflite", "--to", "edgetpu"], 2,
      r"tflite -> tflite-int8 \(for --to edgetpu\) needs --calibration DIR"),
    C("convert-keras-to-edgetpu-without-calibration", ["convert", "{w}/model.keras", "--to", "edgetpu"], 2,
      r"needs --calibration DIR"),
    C("convert-compiled-model-back", ["convert", "{w}/compiled_edgetpu.tflite", "--to", "onnx"],
      2, r"no conversion route from edgetpu", needs=("compiled_edgetpu.tflite",)),
    C("classify-compiled-without-tpu", CLASSIFY[:2] + ["{w}/mobilenet_edgetpu.tflite", "-i", "{w}/red.png"],
      1, r"compiled for the Edge TPU.*(uncompiled|CPU)", needs=("mobilenet_edgetpu.tflite",)),
    C("bench-compiled-without-tpu", ["bench", "{w}/compiled_edgetpu.tflite", "--runs", "1"], 1,
      r"compiled for the Edge TPU", needs=("compiled_edgetpu.tflite",)),
    C("validate-compiled-without-tpu", ["validate", "{w}/color_uint8.tflite", "{w}/compiled_edgetpu.tflite"],
      2, r"compiled for the Edge TPU.*--save-outputs", report=True, needs=("compiled_edgetpu.tflite",)),
    C("convert-compiler-missing", CONVERT_TPU, 1, r"no Edge TPU compiler|edgetpu_compiler",
      env={"PATH": "{w}/bin_empty"}),
    C("convert-compiler-crashes", CONVERT_TPU, 1, r"compiler|signal|SIGSEGV",
      env={"PATH": "{w}/bin_crash"}),
    C("convert-compiler-fails", CONVERT_TPU, 1, r"compiler", env={"PATH": "{w}/bin_fail"}),
    C("convert-compiler-hangs", CONVERT_TPU + ["--timeout", "2"], 1, r"timed out|timeout",
      env={"PATH": "{w}/bin_hang"}),
    # --- images: odd but valid ones classify right; broken ones fail clearly
    C("classify-16bit-png", CLASSIFY + ["{w}/gray16.png"], 0, "", stdout=r"RESULTS-+\n3: "),
    C("classify-cmyk-jpeg", CLASSIFY + ["{w}/red_cmyk.jpg"], 0, "", stdout=r"RESULTS-+\n0: "),
    C("classify-palette-png", CLASSIFY + ["{w}/red_palette.png"], 0, "", stdout=r"RESULTS-+\n0: "),
    C("classify-grayscale-png", CLASSIFY + ["{w}/gray_l.png"], 0, "", stdout=r"RESULTS-+\n3: "),
    C("classify-rgba-png", CLASSIFY + ["{w}/red_rgba.png"], 0, "", stdout=r"RESULTS-+\n0: "),
    C("classify-exif-rotated-jpeg", CLASSIFY + ["{w}/red_exif6.jpg"], 0, "", stdout=r"RESULTS-+\n0: "),
    C("classify-truncated-png", CLASSIFY + ["{w}/truncated.png"], 2, r"cannot read image .*truncated\.png"),
    C("classify-truncated-jpeg", CLASSIFY + ["{w}/truncated.jpg"], 2, r"cannot read image .*truncated\.jpg"),
    C("classify-huge-image", CLASSIFY + ["{w}/huge.png"], 2, r"more than \d+ pixels"),
    C("classify-big-image", CLASSIFY + ["{w}/big.png"], 2, r"more than \d+ pixels"),
    C("classify-not-an-image", CLASSIFY + ["{w}/notes.png"], 2, r"cannot read image .*notes\.png"),
    C("classify-missing-image", CLASSIFY + ["{w}/nowhere.png"], 2, r"does not exist"),
    # --- label files
    C("classify-labels-short", CLASSIFY_L + ["{w}/labels2.txt"], 2, r"2 labels .* 4 classes"),
    C("classify-labels-long", CLASSIFY_L + ["{w}/labels7.txt"], 2, r"7 labels .* 4 classes"),
    C("classify-labels-one-short", CLASSIFY_L + ["{w}/labels3.txt"], 0, r"background", warning=True,
      stdout=r"RESULTS-+\nred: "),
    C("classify-labels-folder", CLASSIFY_L + ["{w}/labels_folder"], 2, r"is a folder"),
    C("classify-labels-not-utf8", CLASSIFY_L + ["{w}/labels_latin1.txt"], 2, r"not UTF-8"),
    C("classify-labels-missing", CLASSIFY_L + ["{w}/nowhere.txt"], 2, r"cannot read labels file"),
    C("bench-plot-into-missing-folder", ["bench", "{w}/color_float.tflite", "--runs", "1", "--plot",
                                         "{w}/no_such_folder/plot.png"], 2, r"cannot write the plot"),
    C("bench-plot-onto-a-folder", ["bench", "{w}/color_float.tflite", "--runs", "1", "--plot",
                                   "{w}/empty_folder"], 2, r"the plot .*empty_folder exists and is a folder"),
    # --- missing optional dependencies
    C("bench-onnx-without-onnxruntime", ["bench", "{w}/good.onnx", "--runs", "1"], 2,
      r"pip install 'edgeport\[convert\]'", hide=("onnxruntime",), needs=("good.onnx",)),
    C("classify-without-tflite-runtime", CLASSIFY + ["{w}/red.png"], 2, r"no TFLite interpreter",
      hide=NO_TFLITE),
    C("bench-plot-without-matplotlib", ["bench", "{w}/color_float.tflite", "--runs", "1", "--plot",
                                        "{w}/plot.png"], 2, r"pip install 'edgeport\[dev\]'",
      hide=("matplotlib", "matplotlib.pyplot")),
    C("convert-keras-without-tensorflow", ["convert", "{w}/keras_bad_config.keras", "--to", "onnx"], 2,
      r"pip install 'edgeport\[convert\]'|keras_bad_config", hide=("tensorflow", "keras", "tf2onnx")),
    C("check-onnx-without-onnx", ["check", "{w}/good.onnx"], 2, r"pip install 'edgeport\[",
      hide=("onnx", "onnxruntime"), needs=("good.onnx",)),
]


# --- numbers out of range: zero, negative, NaN and infinity, per command and flag. Each is one
# `error: argument FLAG: ...` line (or `error: --FLAG ...` for values checked after parsing).
CLASSIFY_RED = CLASSIFY + ["{w}/red.png"]
CONVERT_ONNX = ["convert", "{w}/color_float.tflite", "--to", "onnx"]
VALIDATE = ["validate", "{w}/color_float.tflite", "{w}/color_int8.tflite"]
EVAL = ["eval", "{w}/color_float.tflite", "--images", "{w}/empty_folder", "--labels", "{w}/labels4.txt"]
NOT_FINITE = r"is not a finite number"
OUT_OF_RANGE = r"is out of range"
NUMBER_CASES = [
    ("classify-mean-nan", CLASSIFY_RED + ["-a", "nan"], r"--mean: 'nan' " + NOT_FINITE),
    ("classify-mean-inf", CLASSIFY_RED + ["--input_mean=-inf"], r"--mean: '-inf' " + NOT_FINITE),
    ("classify-std-zero", CLASSIFY_RED + ["-s", "0"], r"--std: '0' " + OUT_OF_RANGE + r".*> 0"),
    ("classify-std-negative", CLASSIFY_RED + ["--std", "-128"], r"--std: '-128' " + OUT_OF_RANGE),
    ("classify-std-nan", CLASSIFY_RED + ["-s", "nan"], r"--std: 'nan' " + NOT_FINITE),
    ("classify-std-inf", CLASSIFY_RED + ["-s", "inf"], r"--std: 'inf' " + NOT_FINITE),
    ("classify-std-overflow", CLASSIFY_RED + ["-s", "1e400"], r"--std: '1e400' " + NOT_FINITE),
    ("classify-threshold-nan", CLASSIFY_RED + ["-t", "nan"], r"--threshold: 'nan' " + NOT_FINITE),
    ("classify-threshold-inf", CLASSIFY_RED + ["-t", "inf"], r"--threshold: 'inf' " + NOT_FINITE),
    ("classify-top-k-zero", CLASSIFY_RED + ["-k", "0"], r"--top_k/--top-k: '0' " + OUT_OF_RANGE),
    ("classify-top-k-negative", CLASSIFY_RED + ["-k", "-3"], r"--top-k: '-3' " + OUT_OF_RANGE),
    ("classify-threads-zero", CLASSIFY_RED + ["--threads", "0"], r"--threads: '0' " + OUT_OF_RANGE),
    ("classify-mean-two-values", CLASSIFY_RED + ["-a", "1", "2"], r"--mean takes one value or one per channel"),
    ("bench-runs-zero", ["bench", "{w}/color_float.tflite", "--runs", "0"], r"--runs: '0' " + OUT_OF_RANGE),
    ("bench-runs-negative", ["bench", "{w}/color_float.tflite", "--runs", "-5"], r"--runs: '-5' " + OUT_OF_RANGE),
    ("bench-warmup-negative", ["bench", "{w}/color_float.tflite", "--warmup", "-1"],
     r"--warmup: '-1' .*integer from 0 to"),
    ("bench-threads-zero", ["bench", "{w}/color_float.tflite", "--threads", "1", "0"], r"--threads: '0' "),
    ("bench-runs-nan", ["bench", "{w}/color_float.tflite", "--runs", "nan"], r"--runs: 'nan' is not an integer"),
    ("convert-std-zero", CONVERT_ONNX + ["--std", "0"], r"--std: '0' " + OUT_OF_RANGE),
    ("convert-std-negative", CONVERT_ONNX + ["--std", "127.5", "-1", "127.5"], r"--std: '-1' " + OUT_OF_RANGE),
    ("convert-std-nan", CONVERT_ONNX + ["--std", "nan"], r"--std: 'nan' " + NOT_FINITE),
    ("convert-mean-inf", CONVERT_ONNX + ["--mean", "inf"], r"--mean: 'inf' " + NOT_FINITE),
    ("convert-size-zero", CONVERT_ONNX + ["--size", "0"], r"--size: '0' " + OUT_OF_RANGE),
    ("convert-size-negative", CONVERT_ONNX + ["--size", "224", "-224"], r"--size: '-224' " + OUT_OF_RANGE),
    ("convert-size-three-numbers", CONVERT_ONNX + ["--size", "2", "2", "2"], r"--size takes H W or one number"),
    ("convert-jobs-zero", CONVERT_ONNX + ["--jobs", "0"], r"--jobs: '0' " + OUT_OF_RANGE),
    ("convert-timeout-zero", CONVERT_ONNX + ["--timeout", "0"], r"--timeout: '0' " + OUT_OF_RANGE),
    ("convert-timeout-nan", CONVERT_ONNX + ["--timeout", "nan"], r"--timeout: 'nan' " + NOT_FINITE),
    ("convert-calibration-count-negative", CONVERT_ONNX + ["--calibration-count", "-1"],
     r"--calibration-count: '-1' " + OUT_OF_RANGE),
    ("convert-input-shape-zero", CONVERT_ONNX + ["--input-shape", "1", "0", "3"], r"--input-shape: '0' "),
    ("validate-atol-nan", VALIDATE + ["--atol", "nan"], r"--atol: 'nan' " + NOT_FINITE),
    ("validate-atol-negative-per-output", VALIDATE + ["--atol", "logits:-1"], r"--atol: '-1' " + OUT_OF_RANGE),
    ("validate-rtol-inf", VALIDATE + ["--rtol", "inf"], r"--rtol: 'inf' " + NOT_FINITE),
    ("validate-quantile-above-one", VALIDATE + ["--quantile", "2"], r"--quantile: '2' " + OUT_OF_RANGE),
    ("validate-min-top1-nan", VALIDATE + ["--min-top1", "nan"], r"--min-top1: 'nan' " + NOT_FINITE),
    ("validate-min-cosine-out-of-range", VALIDATE + ["--min-cosine", "1.5"], r"--min-cosine: '1.5' "),
    ("validate-max-scale-error-negative", VALIDATE + ["--max-scale-error", "-0.1"], r"--max-scale-error: "),
    ("validate-std-zero", VALIDATE + ["--std", "0"], r"--std: '0' " + OUT_OF_RANGE),
    ("validate-mean-nan", VALIDATE + ["--mean", "nan"], r"--mean: 'nan' " + NOT_FINITE),
    ("validate-size-negative", VALIDATE + ["--size", "-1"], r"--size: '-1' " + OUT_OF_RANGE),
    ("validate-samples-zero", VALIDATE + ["--samples", "0"], r"--samples: '0' " + OUT_OF_RANGE),
    ("validate-seed-negative", VALIDATE + ["--seed", "-1"], r"--seed: '-1' " + OUT_OF_RANGE),
    ("validate-top-k-zero", VALIDATE + ["--top-k", "0"], r"--top-k: '0' " + OUT_OF_RANGE),
    ("eval-std-zero", EVAL + ["--std", "0"], r"--std: '0' " + OUT_OF_RANGE),
    ("eval-std-inf", EVAL + ["--std", "inf"], r"--std: 'inf' " + NOT_FINITE),
    ("eval-mean-nan", EVAL + ["--mean", "nan"], r"--mean: 'nan' " + NOT_FINITE),
    ("eval-size-zero", EVAL + ["--size", "0", "0"], r"--size: '0' " + OUT_OF_RANGE),
    ("eval-top-k-zero", EVAL + ["-k", "0"], r"--top-k: '0' " + OUT_OF_RANGE),
    ("eval-limit-negative", EVAL + ["--limit", "-2"], r"--limit: '-2' " + OUT_OF_RANGE),
    ("inspect-min-runtime-version-zero", ["inspect", "{w}/color_float.tflite", "--edgetpu",
                                          "--min-runtime-version", "0"], r"--min-runtime-version: '0' "),
    ("check-input-shape-negative", ["check", "{w}/color_float.tflite", "--input-shape", "1", "-3"],
     r"--input-shape: '-3' " + OUT_OF_RANGE),
]
CASES += [C(name, argv, 2, r"^error: (argument )?" + r".*" + pattern) for name, argv, pattern in NUMBER_CASES]


# -- files that are not regular files, damaged or huge models, odd sidecars/labels ----
def _fifo(*names):
    def make(w):
        for n in names:
            os.mkfifo(w / n)
    return make


def _chardev(name):
    def make(w):
        try:
            os.mknod(w / name, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
        except PermissionError:
            pytest.skip("mknod is not allowed here (no CAP_MKNOD)")
    return make


def _link(name, target):
    def make(w):
        os.symlink(target, w / name)
    return make


def _sparse(name, size=40 << 30):
    def make(w):
        with open(w / name, "wb") as f:
            f.write((DATA / "color_float.tflite").read_bytes())
            f.truncate(size)
    return make


def _sidecar(model, text):
    def make(w):
        (w / (model + ".edgeport.json")).write_bytes(text if isinstance(text, bytes) else text.encode())
    return make


def _both(*makers):
    def make(w):
        for m in makers:
            m(w)
    return make


def _image_folder(w):
    (w / "photos").mkdir()
    shutil.copy(w / "red.png", w / "photos" / "red.png")
    (w / "photos" / "._red.png").write_bytes(b"\0\5\26\7AppleDouble metadata, not an image")
    os.symlink("gone.png", w / "photos" / "dangling.png")


BENCH = ["bench", "{w}/color_float.tflite", "--runs", "1"]
VALIDATE_SELF = ["validate", "{w}/color_float.tflite", "{w}/color_float.tflite", "--samples", "1"]
PLOT_REFUSED = r"the plot .* exists and is (a FIFO|a character device|a symbolic link).*only replaces regular files"
OUT_REFUSED = r"exists and is (a FIFO|a character device|a symbolic link).*only replaces regular files"
DAMAGED = [("huge", r"tensor .* needs 24\.0 GB"), ("zero", r"damaged: tensor .* dimension of 0"),
           ("noout", r"damaged: the main subgraph has no outputs"),
           ("bigbuf", r"damaged: buffer \d+ claims 1000000000000 bytes at offset 1")]
CASES += [
    # 1. outputs: a device node, FIFO or symbolic link under an output name is refused, not replaced
    C("bench-plot-onto-a-device", BENCH + ["--plot", "{w}/dev"], 2, PLOT_REFUSED, setup=_chardev("dev"),
      root=True),
    C("bench-plot-onto-a-fifo", BENCH + ["--plot", "{w}/pipe"], 2, PLOT_REFUSED, setup=_fifo("pipe")),
    C("bench-plot-onto-a-symlink", BENCH + ["--plot", "{w}/link.png"], 2, PLOT_REFUSED,
      setup=_link("link.png", "labels4.txt")),
    C("validate-junit-onto-a-fifo", VALIDATE_SELF + ["--junit", "{w}/pipe"], 2, OUT_REFUSED, setup=_fifo("pipe")),
    C("validate-junit-onto-a-device", VALIDATE_SELF + ["--junit", "{w}/dev"], 2, OUT_REFUSED,
      setup=_chardev("dev"), root=True),
    C("validate-report-onto-a-symlink", VALIDATE_SELF + ["--report", "{w}/r.json"], 2, OUT_REFUSED,
      setup=_link("r.json", "labels4.txt")),
    C("validate-save-outputs-onto-a-fifo", ["validate", "{w}/color_float.tflite", "--samples", "1",
                                            "--save-outputs", "{w}/pipe"], 2, OUT_REFUSED, setup=_fifo("pipe")),
    C("convert-model-output-is-a-symlink", ["convert", "{w}/good.onnx", "--to", "ort", "--no-validate", "--force"], 2,
      OUT_REFUSED, setup=_link("good.ort", "labels4.txt"), needs=("good.onnx",)),
    C("convert-sidecar-output-is-a-fifo", ["convert", "{w}/good.onnx", "--to", "ort", "--no-validate"], 2,
      OUT_REFUSED, setup=_fifo("good.ort.edgeport.json"), needs=("good.onnx",)),
    # 6. inputs that are not regular files never hang and never fill memory
    C("classify-model-is-a-fifo", CLASSIFY[:2] + ["{w}/pipe.tflite", "-i", "{w}/red.png"], 2,
      r"is a FIFO.*not a regular file", setup=_fifo("pipe.tflite")),
    C("classify-model-is-dev-zero", CLASSIFY[:2] + ["/dev/zero", "-i", "{w}/red.png"], 2,
      r"/dev/zero is a character device"),
    C("classify-image-is-a-fifo", CLASSIFY + ["{w}/pipe.png"], 2, r"is a FIFO", setup=_fifo("pipe.png")),
    C("classify-labels-is-a-fifo", CLASSIFY_L + ["{w}/pipe.txt"], 2, r"is a FIFO", setup=_fifo("pipe.txt")),
    C("classify-labels-is-dev-zero", CLASSIFY_L + ["/dev/zero"], 2, r"character device"),
    C("classify-sidecar-is-a-fifo", CLASSIFY + ["{w}/red.png"], 0, r"sidecar .* ignored: .*FIFO",
      warning=True, stdout=r"RESULTS-+\n0: ", setup=_fifo("color_float.tflite.edgeport.json")),
    C("check-model-is-a-fifo", ["check", "{w}/pipe.onnx"], 2, r"is a FIFO", setup=_fifo("pipe.onnx")),
    C("convert-source-is-a-fifo", ["convert", "{w}/pipe.onnx", "--to", "ort"], 2, r"is a FIFO",
      setup=_fifo("pipe.onnx")),
    C("bench-model-is-dev-zero", ["bench", "/dev/zero", "--runs", "1"], 2, r"character device"),
    # 7. damaged or huge models: exit 2 saying what is wrong, never "internal error"
    *[C(f"{cmd}-damaged-{name}", argv, 2, pat)
      for name, pat in DAMAGED
      for cmd, argv in (("classify", CLASSIFY[:2] + [f"{{w}}/{name}.tflite", "-i", "{w}/red.png"]),
                        ("bench", ["bench", f"{{w}}/{name}.tflite", "--runs", "1"]),
                        ("check", ["check", f"{{w}}/{name}.tflite"]))],
    C("classify-sparse-40gb-tflite", CLASSIFY[:2] + ["{w}/sparse.tflite", "-i", "{w}/red.png"], 2,
      r"sparse\.tflite is 40\.0 GB, more than", setup=_sparse("sparse.tflite")),
    C("check-sparse-40gb-tflite", ["check", "{w}/sparse.tflite"], 2, r"40\.0 GB", setup=_sparse("sparse.tflite")),
    C("bench-onnx-input-of-2-to-the-40", ["bench", "{w}/big.onnx", "--runs", "1"], 2,
      r"tensor x of shape \[1, 1099511627776\] needs", needs=("big.onnx",)),
    # 8. thread counts beyond what the system allows
    C("bench-threads-100000", BENCH + ["--threads", "100000"], 2, r"--threads:? '?100000'? is out of range"),
    C("classify-threads-100000", CLASSIFY + ["{w}/red.png", "--threads", "100000"], 2, r"out of range"),
    C("classify-threads-0", CLASSIFY + ["{w}/red.png", "--threads", "0"], 2, r"out of range"),
    # 9. damaged sidecars: one warning naming the file, then as if there were none
    *[C(f"classify-sidecar-{n}", CLASSIFY + ["{w}/red.png"], 0, r"sidecar .*color_float\.tflite\.edgeport\.json "
        r"ignored: .*" + pat, warning=True, stdout=r"RESULTS-+\n0: ", setup=_sidecar("color_float.tflite", text))
      for n, text, pat in (
          ("preprocessing-list", '{"preprocessing": ["a"]}', r"'preprocessing' is not an object"),
          ("deep-nesting", "[" * 100000 + "]" * 100000, r"nested too deeply|not valid JSON"),
          ("route-number", '{"route": 5}', r"'route' is not a list"),
          ("mean-text", '{"preprocessing": {"mean": "abc"}}', r"mean"),
          ("mean-nan", '{"preprocessing": {"mean": NaN}}', r"mean"),
          ("std-zero", '{"preprocessing": {"std": 0}}', r"std"),
          ("not-json", b"\xff\xfe{", r"not valid JSON"),
          ("labels-number", '{"labels": 3}', r"'labels'"))],
    C("classify-sidecar-is-dev-zero-link", CLASSIFY + ["{w}/red.png"], 0, r"ignored: .*character device",
      warning=True, stdout=r"RESULTS-+\n0: ", setup=_link("color_float.tflite.edgeport.json", "/dev/zero")),
    # 11. labels: duplicate ids, a byte order mark, control characters
    C("classify-labels-duplicate-ids", CLASSIFY_L + ["{w}/labels_dup.txt"], 2, r"gives id 1 twice \(lines 2 and 3\)"),
    C("classify-labels-bom", CLASSIFY_L + ["{w}/labels_bom.txt"], 0, "", stdout=r"RESULTS-+\nred: "),
    C("classify-labels-escapes", CLASSIFY_L + ["{w}/labels_esc.txt"], 0, "",
      stdout=r"RESULTS-+\nr\\x1b\[2Jed\\x00: "),
    # 12. image folders: hidden files skipped, unreadable entries reported one by one
    C("classify-folder-hidden-and-dangling", CLASSIFY + ["{w}/photos"], 0, r"skipped .*dangling\.png",
      warning=True, stdout=r"RESULTS-+\n0: ", setup=_image_folder),
    # 13. arguments
    C("classify-empty-model-path", CLASSIFY[:2] + ["", "-i", "{w}/red.png"], 2, r"the model path is empty|-m/--model: empty value"),
    C("convert-empty-source-path", ["convert", "", "--to", "onnx"], 2, r"empty"),
    C("classify-model-path-not-utf8", CLASSIFY[:2] + [os.fsdecode(b"{w}/m\xff.tflite"), "-i", "{w}/red.png"],
      2, r"m\\udcff\.tflite(: it does not exist|' is not valid UTF-8)"),
    C("convert-opset-0", ["convert", "{w}/color_float.tflite", "--to", "onnx", "--opset", "0"], 2,
      r"--opset(: '0' is out of range| 0 is not an ONNX opset)"),
    C("convert-opset-99", ["convert", "{w}/color_float.tflite", "--to", "onnx", "--opset", "99"], 2,
      r"--opset 99 is not an ONNX opset"),
    C("convert-failed-leaves-no-new-output-folder", ["convert", "{w}/model.keras", "--to", "edgetpu", "-o",
                                                     "{w}/new/deeper"], 2, r"needs --calibration DIR"),
]


def _unwritable_case():
    # As root every folder is writable, so use one the kernel refuses to create files in.
    target = "/proc/edgeport-no-such-dir/out" if os.geteuid() == 0 else "{w}/readonly/out"
    return C("convert-unwritable-output", ["convert", "{w}/color_float.tflite", "--to", "onnx", "-o", target],
             2, r"cannot create output folder|not writable")


CASES.append(_unwritable_case())


def _snapshot(folder):
    """{relative path: sha256} of every file, plus every folder (hash None); a symbolic link by
    its target, a FIFO or device by its kind (never opened: that could hang or never end)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            p = os.path.join(root, d)
            out[os.path.relpath(p, folder) + ("/" if not os.path.islink(p) else "")] = \
                ("link", os.readlink(p)) if os.path.islink(p) else None
        for f in files:
            p = os.path.join(root, f)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[os.path.relpath(p, folder)] = ("link", os.readlink(p))
                continue
            if not stat.S_ISREG(st.st_mode):
                out[os.path.relpath(p, folder)] = ("node", stat.S_IFMT(st.st_mode), st.st_rdev)
                continue
            if st.st_size > 1 << 30:  # a sparse test file: its size and time are enough
                out[os.path.relpath(p, folder)] = ("big", st.st_size, st.st_mtime_ns)
                continue
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def test_the_table_is_big_enough():
    print(f"bad-input cases: {len(CASES)}")  # conftest also prints the run's count at the end
    assert len(CASES) >= 120
    assert len(NUMBER_CASES) >= 50
    assert len({c.id for c in CASES}) == len(CASES)
    commands = {c.argv[0] for c in CASES}
    assert {"classify", "bench", "convert", "inspect", "check", "validate", "eval"} <= commands


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, inputs, tmp_path, capsys, monkeypatch):
    for name in case.needs:
        if not (inputs / name).exists():
            pytest.skip(f"{name} is not available here (Coral fixtures in ../shared, or onnx missing)")
    if case.root and os.geteuid() != 0:
        pytest.skip("needs root (mknod)")
    w = tmp_path / "w"
    shutil.copytree(inputs, w, symlinks=True)
    if case.setup:
        case.setup(w)
    if "readonly" in " ".join(case.argv):
        (w / "readonly").mkdir(mode=0o500)
    fill = lambda s: s.replace("{w}", str(w))  # noqa: E731
    argv = [fill(a) for a in case.argv]
    for k, v in case.env.items():
        monkeypatch.setenv(k, fill(v))
    for mod in case.hide:
        monkeypatch.setitem(sys.modules, mod, None)
    before = _snapshot(w)

    code = run_cli(capsys, *argv)
    code, out, err = code
    report = f"\n$ edgeport {' '.join(argv)}\nexit {code}\nstdout:\n{out}\nstderr:\n{err}"

    assert "Traceback" not in out + err, report
    assert code == case.code, report
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    if case.report:
        assert not errors or len(errors) == 1, report
        lines = out.splitlines() + errors
        assert any(re.search(case.pattern, line) for line in lines), \
            f"no report line matches {case.pattern!r}" + report
    elif case.code:
        assert len(errors) == 1, report
        assert re.search(case.pattern, errors[0]), f"the error line does not match {case.pattern!r}" + report
        assert "internal error" not in errors[0], report
    else:
        assert not errors, report
        if case.warning:
            assert len(warnings) == 1 and re.search(case.pattern, warnings[0]), report
    if case.stdout:
        assert re.search(case.stdout, out), report

    print(f"[{case.id}] exit {code}: {(errors + warnings + [''])[0]}")  # shown with pytest -rP
    after = _snapshot(w)
    changed = [p for p, h in before.items() if after.get(p, "gone") != h]
    assert not changed, f"inputs changed or removed: {changed}" + report
    new = sorted(set(after) - set(before) - set(case.outputs))
    assert not new, f"unexpected new files: {new}" + report


def test_exif_rotation_is_applied(inputs):
    """The EXIF-rotated photo (30 x 12 stored, orientation 6) is turned upright: 12 x 30."""
    from edge.preprocess import load_image

    assert load_image(inputs / "red_exif6.jpg").size == (12, 30)


def test_sixteen_bit_keeps_its_level(inputs):
    """A 16-bit gray of 32896/65535 becomes 8-bit 128, not 255 (clipped) or 0 (truncated)."""
    import numpy as np

    from edge.preprocess import load_image

    arr = np.asarray(load_image(inputs / "gray16.png"))
    assert arr.shape[2] == 3 and np.all(arr == 128)


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(inputs, where):
    """--debug (before or after the command name) lets the exception through, with its traceback."""
    from edge.errors import ModelFormatError
    from edgeport.cli import main

    argv = ["classify", "-m", str(inputs / "truncated.tflite"), "-i", str(inputs / "red.png")]
    argv = ["--debug"] + argv if where == "before" else argv[:1] + ["--debug"] + argv[1:]
    with pytest.raises(ModelFormatError):
        main(argv)
