"""Broken copies of a Core ML .mlpackage, each with one of the common silent Core ML errors.

    perturb_weights(src, dst)        weight.bin: one layer's weights get noise
    set_image_bias(src, dst, bias)   the ImageType bias (the program's `add` after the image)
    set_image_scale(src, dst, s)     the ImageType scale (the program's `mul`)
    set_color_layout(src, dst, "BGR")  the description's colorSpace (red and blue swapped)

Each writes a full copy of the package; the original is untouched.
"""

import shutil
import struct
from pathlib import Path

import numpy as np

MODEL = Path("Data") / "com.apple.CoreML" / "model.mlmodel"
WEIGHTS = Path("Data") / "com.apple.CoreML" / "weights" / "weight.bin"


def _spec(pkg):
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString((Path(pkg) / MODEL).read_bytes())
    return spec


def _copy(src, dst):
    dst = Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def _ops(spec):
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            yield from block.operations


def _const(spec, suffix):
    for op in _ops(spec):
        if op.type == "const" and op.outputs and op.outputs[0].name.endswith(suffix):
            return op
    raise LookupError(f"no const op named *{suffix}")


def _set_floats(op, values):
    t = op.attributes["val"].immediateValue.tensor
    kind = t.WhichOneof("value")
    if kind == "floats":
        del t.floats.values[:]
        t.floats.values.extend(float(v) for v in values)
    elif kind == "bytes":   # float16 immediates are stored as bytes
        t.bytes.values = np.asarray(values, np.float16).tobytes()
    else:
        raise ValueError(f"const {op.outputs[0].name} holds {kind}")


def _save(spec, dst):
    (Path(dst) / MODEL).write_bytes(spec.SerializeToString())


def set_image_bias(src, dst, bias):
    dst = _copy(src, dst)
    spec = _spec(dst)
    op = _const(spec, "__biased___y_0")
    n = len(op.attributes["val"].immediateValue.tensor.floats.values) or 3
    _set_floats(op, np.broadcast_to(np.asarray(bias, np.float32), (n,)))
    _save(spec, dst)
    return dst


def set_image_scale(src, dst, scale):
    dst = _copy(src, dst)
    spec = _spec(dst)
    _set_floats(_const(spec, "__scaled___y_0"), [scale])
    _save(spec, dst)
    return dst


def set_color_layout(src, dst, layout="BGR"):
    from coremltools.proto import FeatureTypes_pb2

    dst = _copy(src, dst)
    spec = _spec(dst)
    for f in spec.description.input:
        if f.type.WhichOneof("Type") == "imageType":
            f.type.imageType.colorSpace = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Value(layout)
    _save(spec, dst)
    return dst


def _blob_of(op):
    """(offset in weight.bin of its metadata, dtype) of a const op stored in weight.bin."""
    v = op.attributes["val"]
    if v.WhichOneof("value") != "blobFileValue":
        return None
    return int(v.blobFileValue.offset), v.type.tensorType.dataType


def perturb_weights(src, dst, layer=0, relative=1.0, seed=0):
    """Add noise (`relative` times the weights' own std) to the `layer`-th weight tensor of
    weight.bin (in file order), leaving the file's structure intact."""
    dst = _copy(src, dst)
    spec = _spec(dst)
    blobs = sorted(b for op in _ops(spec) if op.type == "const"
                   for b in [_blob_of(op)] if b is not None)
    offset, _ = blobs[layer]
    path = dst / WEIGHTS
    data = bytearray(path.read_bytes())
    # blob metadata: sentinel u32, mil dtype u32, size in bytes u64, data offset u64
    sentinel, dtype, size, data_offset = struct.unpack_from("<IIQQ", data, offset)
    assert sentinel == 0xDEADBEEF, "not a blob metadata record"
    np_type = {1: np.float16, 2: np.float32}.get(dtype)
    if np_type is None:
        raise ValueError(f"weight blob of MIL storage dtype {dtype}")
    w = np.frombuffer(bytes(data[data_offset:data_offset + size]), np_type).astype(np.float32)
    noise = np.random.default_rng(seed).standard_normal(w.shape) * relative * (w.std() or 1.0)
    data[data_offset:data_offset + size] = (w + noise).astype(np_type).tobytes()
    path.write_bytes(bytes(data))
    return dst


def swap_labels(src, dst, i=0, j=1):
    """The classifier's labels i and j exchanged (the probabilities stay where they are)."""
    dst = _copy(src, dst)
    spec = _spec(dst)
    for op in _ops(spec):
        if op.type != "classify":
            continue
        arg = op.inputs["classes"].arguments[0]
        value = arg.value if arg.WhichOneof("binding") == "value" else \
            _const(spec, arg.name).attributes["val"]
        imm = value.immediateValue
        if imm.WhichOneof("value") == "list":
            items = list(imm.list.values)
            a, b = (items[k].immediateValue.tensor.strings.values for k in (i, j))
            a[0], b[0] = b[0], a[0]
        else:
            v = imm.tensor.strings.values
            v[i], v[j] = v[j], v[i]
        _save(spec, dst)
        return dst
    raise LookupError("no classify op")


def scale_weights(src, dst, nth_largest=0, factor=1.01):
    """Multiply one weight tensor of weight.bin by `factor`: the `nth_largest`-th of the
    largest blobs (conv kernels, not biases), counted in file order among equally large ones."""
    dst = _copy(src, dst)
    spec = _spec(dst)
    path = dst / WEIGHTS
    data = bytearray(path.read_bytes())
    blobs = []
    for op in _ops(spec):
        b = _blob_of(op) if op.type == "const" else None
        if b is not None:
            offset, _ = b
            blobs.append((struct.unpack_from("<IIQQ", data, offset), offset))
    biggest = max(meta[2] for meta, _ in blobs)
    (sentinel, dtype, size, data_offset), _ = sorted(
        [b for b in blobs if b[0][2] == biggest], key=lambda b: b[1])[nth_largest]
    assert sentinel == 0xDEADBEEF, "not a blob metadata record"
    np_type = {1: np.float16, 2: np.float32}[dtype]
    w = np.frombuffer(bytes(data[data_offset:data_offset + size]), np_type).astype(np.float32)
    data[data_offset:data_offset + size] = (w * factor).astype(np_type).tobytes()
    path.write_bytes(bytes(data))
    return dst
