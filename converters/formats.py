"""Model formats, and detection of a model's format from its content (not its extension)."""

import os
import zipfile

from edge.errors import InputError, ModelFormatError
from edge.tflite_model import TFLiteModel, is_tflite

# Format names used by the registry, the planner and the CLI.
TORCH_MODULE = "torch-module"      # a module factory (--torch-model module:factory) + state dict
TORCHSCRIPT = "torchscript"
TORCH_EXPORT = "torch-export"      # torch.export ExportedProgram (.pt2)
SAVEDMODEL = "savedmodel"
KERAS = "keras"                    # Keras 3 .keras or legacy .h5
TFLITE = "tflite"                  # float (or partly quantized) TFLite
TFLITE_INT8 = "tflite-int8"        # full-integer TFLite, what the Edge TPU compiler takes
EDGETPU = "edgetpu"                # TFLite compiled by edgetpu_compiler
ONNX = "onnx"
ORT = "ort"                        # ONNX Runtime's flatbuffer format
COREML = "coreml"                  # .mlpackage or .mlmodel

ALL = (TORCH_MODULE, TORCHSCRIPT, TORCH_EXPORT, SAVEDMODEL, KERAS, TFLITE, TFLITE_INT8, EDGETPU,
       ONNX, ORT, COREML)
TORCH_FORMATS = (TORCH_MODULE, TORCHSCRIPT, TORCH_EXPORT)

# File names of artefacts: <stem><suffix>
OUTPUT_SUFFIX = {
    ONNX: ".onnx", ORT: ".ort", COREML: ".mlpackage", TFLITE: "_float.tflite",
    TFLITE_INT8: "_int8.tflite", EDGETPU: "_edgetpu.tflite", SAVEDMODEL: "_savedmodel",
    TORCHSCRIPT: ".torchscript.pt", TORCH_EXPORT: ".pt2",
}

# Extensions of model files and folders people bring (and edgeport writes), stripped from a
# source's name to make its artefacts' names: x.hdf5 -> x_float.tflite, not x.hdf5_float.tflite.
# Compound ones come first so the longest match wins.
MODEL_EXTENSIONS = (".torchscript.pt", ".torchscript", ".mlpackage", ".mlmodel", ".tflite",
                    ".onnx", ".ort", ".keras", ".hdf5", ".h5", ".pt2", ".pth", ".pt", ".jit")


def model_stem(path):
    """A model's file name without its model extension (case-insensitive); the name itself when
    it has none, or when stripping would leave nothing."""
    name = os.path.basename(os.fspath(path).rstrip("/" + os.sep))
    for ext in MODEL_EXTENSIONS:
        if name.lower().endswith(ext) and len(name) > len(ext):
            return name[:-len(ext)]
    return name


_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def tflite_kind(model):
    """TFLITE, TFLITE_INT8 or EDGETPU for a parsed TFLiteModel.

    Full-integer means every tensor an op reads or writes is integer, except the tensors of
    QUANTIZE/DEQUANTIZE ops at the model's edges.
    """
    if model.is_edgetpu_compiled():
        return EDGETPU
    g = model.main
    floats = {"FLOAT32", "FLOAT16", "FLOAT64"}
    edge_ops = ("QUANTIZE", "DEQUANTIZE")
    for op in g.operators:
        if op.opcode in edge_ops or op.opcode == "CUSTOM":
            continue  # custom ops run on the CPU whatever their types (e.g. PosenetDecoderOp)
        for t in op.inputs + op.outputs:
            if t >= 0 and g.tensors[t].dtype in floats:
                return TFLITE
    return TFLITE_INT8 if g.operators else TFLITE


def _zip_names(path):
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except Exception:  # BadZipFile, OSError, NotImplementedError (zip version), EOFError...
        raise ModelFormatError(f"{path} looks like a zip archive but cannot be read",
                               "the file is truncated or damaged") from None


def detect_format(path):
    """The format of the model at `path`, from its content. Raises InputError/ModelFormatError."""
    from edge.files import check_input, check_path_text, open_input

    path = check_path_text(path, "model path")
    check_input(path, "model", "model", allow_dir=True)  # regular file or folder, size bounded
    if os.path.isdir(path):
        names = set(os.listdir(path))
        if "saved_model.pb" in names or "saved_model.pbtxt" in names:
            return SAVEDMODEL
        if "Manifest.json" in names and path.rstrip("/").endswith(".mlpackage"):
            return COREML
        raise InputError(f"{path} is a folder but not a TF SavedModel or Core ML package",
                         "pass a model file, or a folder holding saved_model.pb")
    with open_input(path, "model", "model") as f:
        head = f.read(64)
    if not head:
        raise ModelFormatError(f"{path} is empty", "was a download or copy interrupted? fetch it again")
    if is_tflite(head):
        return tflite_kind(TFLiteModel.load(path))
    if head[4:8] == b"ORTM":
        return ORT
    if head.startswith(_HDF5_MAGIC):
        return KERAS
    if head.startswith(_ZIP_MAGIC):
        names = _zip_names(path)
        if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
            return KERAS
        if any(n.endswith("archive_format") or "serialized_exported_program" in n for n in names):
            return TORCH_EXPORT
        if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
            return TORCHSCRIPT
        if any(n.endswith("/data.pkl") for n in names):
            raise InputError(f"{path} is a PyTorch checkpoint (a pickled state dict or module), "
                             "not a self-contained model",
                             "pass --torch-model module:factory with it, or export TorchScript/.pt2")
        raise ModelFormatError(f"{path} is a zip archive of no model format edgeport knows")
    kind = _protobuf_kind(path)
    if kind:
        return kind
    raise ModelFormatError(f"cannot tell what kind of model {path} is",
                           "edgeport reads TFLite, ONNX, ORT, SavedModel, Keras, TorchScript, "
                           ".pt2 and Core ML")


def onnx_graphs(graph):
    """An ONNX `graph` and every subgraph under it (If branches, Loop and Scan bodies), depth first."""
    yield graph
    for n in graph.node:
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from onnx_graphs(sub)


def external_data_files(model, model_path):
    """{location: checked path} of every external-data file `model` (loaded without its
    external data) names, checked as onnx.checker checks them when `check` and `validate` load
    a model: the location is relative, inside the model's folder (no '..', no absolute path,
    no symbolic link on the way), and a regular file of a model's bounded size. InputError
    (one line) otherwise, before anything reads or copies it."""
    import re

    from edge.files import check_input, printable

    base = os.path.dirname(os.path.abspath(os.fspath(model_path)))
    name = os.path.basename(os.fspath(model_path))
    out = {}
    for g in onnx_graphs(model.graph):
        for t in g.initializer:
            if t.data_location != 1:  # TensorProto.EXTERNAL
                continue
            loc = next((e.value for e in t.external_data if e.key == "location"), "")
            if loc in out:
                continue
            where = f"{printable(name)}: tensor {printable(t.name)!r} keeps its data in {printable(loc)!r}"
            parts = [p for p in re.split(r"[\\/]", loc) if p not in ("", ".")]
            if not loc or "\0" in loc or os.path.isabs(loc) or re.match(r"^[A-Za-z]:", loc) \
                    or ".." in parts or not parts:
                raise InputError(f"{where}, outside the model's folder",
                                 "external data must sit in the model's folder (onnx.checker refuses it too)")
            cur = base
            for part in parts:
                cur = os.path.join(cur, part)
                if os.path.islink(cur):
                    raise InputError(f"{where}, a symbolic link", "external data must be a regular file "
                                     "in the model's folder (onnx.checker refuses links too)")
            real = os.path.realpath(cur)
            if not real.startswith(os.path.realpath(base).rstrip(os.sep) + os.sep):
                raise InputError(f"{where}, outside the model's folder")
            check_input(cur, "external data file", "model")
            out[loc] = cur
    return out


def load_onnx(path, **kwargs):
    """onnx.load, with a damaged file as ModelFormatError (not a protobuf DecodeError)."""
    from edge.errors import first_line, require

    onnx = require("onnx", "convert", "reading an ONNX model")
    try:
        return onnx.load(os.fspath(path), **kwargs)
    except Exception as e:  # DecodeError, or a missing external-data file
        raise ModelFormatError(f"cannot read ONNX model {path}: {first_line(e)}",
                               "the file is truncated or damaged: export it again") from None


# ONNX and Core ML's .mlmodel are both protobuf messages with no magic number, so they are told
# apart by walking the message's top-level fields (tag and wire type; payloads are skipped, not
# read), never by the first bytes: exporters order fields differently and may leave any
# optional text empty.
#   ONNX ModelProto: ir_version (1, varint) and graph (7, bytes) required; every field < 100
#     (producer_name 2, producer_version 3, domain 4, model_version 5, doc_string 6,
#     opset_import 8, metadata_props 14, training_info 20, functions 25, configuration 26).
#   Core ML Model: specificationVersion (1, varint), description (2, bytes), isUpdatable (10),
#     and its one model type, a field numbered 200 or more (pipeline 200-202, GLM 300-...,
#     neuralNetwork 500-, mlProgram 502, ..., custom 555, linkedModel 556, ...).
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_ONNX_TYPES = {1: _VARINT, 2: _LEN, 3: _LEN, 4: _LEN, 5: _VARINT, 6: _LEN, 7: _LEN, 8: _LEN,
               14: _LEN, 20: _LEN, 25: _LEN, 26: _LEN}
_COREML_TYPES = {1: _VARINT, 2: _LEN, 10: _VARINT}
_COREML_FIRST_TYPE_FIELD = 200
_MAX_FIELDS = 100_000


def _read_varint(f):
    value = shift = 0
    for _ in range(10):
        b = f.read(1)
        if not b:
            return None
        value |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return value
        shift += 7
    return None


def protobuf_fields(path):
    """{field number: wire type} of the top-level fields of a protobuf file, or None when the
    file is not one well-formed protobuf message (a bad tag or wire type, a length past the
    end, a field repeated with two wire types)."""
    from edge.files import open_input

    fields = {}
    with open_input(path, "model", "model") as f:
        size = os.fstat(f.fileno()).st_size
        for _ in range(_MAX_FIELDS):
            pos = f.tell()
            if pos == size:
                return fields or None
            tag = _read_varint(f)
            if tag is None:
                return None
            number, wire = tag >> 3, tag & 7
            if number == 0 or wire not in (_VARINT, _I64, _LEN, _I32):
                return None
            if fields.setdefault(number, wire) != wire:
                return None
            if wire == _VARINT:
                if _read_varint(f) is None:
                    return None
                continue
            n = {_I64: 8, _I32: 4}.get(wire)
            if n is None:
                n = _read_varint(f)
                if n is None:
                    return None
            if f.tell() + n > size:
                return None
            f.seek(n, os.SEEK_CUR)
    return None


def _protobuf_kind(path):
    """ONNX or COREML for a protobuf file whose top-level fields fit one of them; the extension
    decides only when the fields fit both or neither cleanly; None when it is no protobuf."""
    fields = protobuf_fields(path)
    if not fields:
        return None

    def fits(types):
        return all(types.get(n, w) == w for n, w in fields.items())

    onnx = (fields.get(1) == _VARINT and fields.get(7) == _LEN and max(fields) < 100
            and fits(_ONNX_TYPES))
    coreml = (fields.get(1) == _VARINT and fields.get(2) == _LEN and fits(_COREML_TYPES)
              and any(n >= _COREML_FIRST_TYPE_FIELD for n in fields))
    if onnx != coreml:
        return ONNX if onnx else COREML
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext == ".onnx" and fields.get(1) == _VARINT:
        return ONNX
    if ext == ".mlmodel" and fields.get(1) == _VARINT:
        return COREML
    return None
