"""Provenance inside each model format's own metadata slot (the sidecar holds the same block).

- ONNX: `metadata_props` entry `edgeport_provenance` (JSON).
- TFLite: a model `metadata` entry named `edgeport_provenance` pointing at a buffer of JSON
  bytes; interpreters and the Edge TPU compiler ignore metadata they do not know.
- Core ML: `user_defined_metadata["edgeport_provenance"]` (JSON), plus author, license,
  short description and version in their own fields (set by the converter).
- ORT: the ONNX copy is stamped before conversion (ORT keeps `metadata_props`).
"""

import json
import os
import shutil

KEY = "edgeport_provenance"


def _dumps(block):
    return json.dumps(block, sort_keys=True, separators=(",", ":"), default=str)


def embed(path, fmt, block):
    """Write `block` (a JSON-able dict) into the model at `path` in place. True when done."""
    from converters import formats

    if fmt == formats.ONNX:
        embed_onnx(path, block)
        return True
    if fmt in (formats.TFLITE, formats.TFLITE_INT8, formats.EDGETPU):
        embed_tflite(path, block)
        return True
    if fmt == formats.COREML:
        embed_coreml(path, block)
        return True
    return False


def read(path, fmt=None):
    """The provenance block embedded in the model at `path`, or None."""
    from converters import formats

    fmt = fmt or formats.detect_format(path)
    if fmt == formats.ONNX:
        import onnx

        m = onnx.load(os.fspath(path), load_external_data=False)
        text = {p.key: p.value for p in m.metadata_props}.get(KEY)
    elif fmt in (formats.TFLITE, formats.TFLITE_INT8, formats.EDGETPU):
        from edge.tflite_model import TFLiteModel

        raw = TFLiteModel.load(path).metadata_bytes(KEY)
        text = raw.decode("utf-8") if raw else None
    elif fmt == formats.COREML:
        spec = _coreml_spec(path)
        text = spec.description.metadata.userDefined.get(KEY)
    elif fmt == formats.ORT:
        text = _ort_metadata(path).get(KEY)
    else:
        return None
    return json.loads(text) if text else None


# -- ONNX ----------------------------------------------------------------------------------
def set_onnx_props(model_proto, block):
    """Set the provenance entry on an in-memory onnx ModelProto (replacing an older one)."""
    props = {p.key: p.value for p in model_proto.metadata_props}
    props[KEY] = _dumps(block)
    del model_proto.metadata_props[:]
    for k, v in props.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = k, v
    return model_proto


def embed_onnx(path, block):
    import onnx

    m = onnx.load(os.fspath(path))
    set_onnx_props(m, block)
    onnx.save(m, os.fspath(path))


def _ort_metadata(path):
    from edge.ort import ort_session

    sess = ort_session(path, log_level=None, what="reading ONNX/ORT metadata")
    return dict(sess.get_modelmeta().custom_metadata_map)


# -- TFLite --------------------------------------------------------------------------------
def _tflite_schema():
    from edge.errors import require

    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        schema = require("tensorflow.lite.python.schema_py_generated", "convert", "writing TFLite metadata",
                         package="ai-edge-litert")
    return schema


def tflite_with_metadata(data, name, payload):
    """The bytes of TFLite model `data` with metadata entry `name` set to `payload` bytes.

    Rebuilt with the official flatbuffers object API (the same as TF's flatbuffer_utils),
    so every other table is kept as it was.
    """
    import flatbuffers
    import numpy as np

    schema = _tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(data), 0))
    buf = schema.BufferT()
    buf.data = np.frombuffer(payload, dtype=np.uint8)
    model.buffers = list(model.buffers or [])
    model.metadata = list(model.metadata or [])
    old = [m for m in model.metadata if _name(m.name) == name]
    if old:  # replace the payload in place, so re-stamping never leaves orphan buffers
        model.buffers[old[0].buffer] = buf
    else:
        model.buffers.append(buf)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(max(1024, len(data) + len(payload) + 1024))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _name(n):
    return n.decode("utf-8", "replace") if isinstance(n, bytes) else n


def embed_tflite(path, block):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) > 1_900_000_000:  # flatbuffers cannot rebuild a >2 GB model; sidecar only
        return
    out = tflite_with_metadata(data, KEY, _dumps(block).encode("utf-8"))
    tmp = os.fspath(path) + ".meta"
    with open(tmp, "wb") as f:
        f.write(out)
    os.replace(tmp, path)


# -- Core ML -------------------------------------------------------------------------------
def _coreml_spec(path):
    import coremltools as ct

    from converters.artefact import PackageCopy

    with PackageCopy(path) as copy:  # never the user's package: coremltools writes to it
        return ct.utils.load_spec(copy.path)


def set_coreml_fields(mlmodel, block, options=None):
    """Set provenance and the descriptive fields on an in-memory coremltools MLModel."""
    if block:
        mlmodel.user_defined_metadata[KEY] = _dumps(block)
    if options is not None:
        if options.author:
            mlmodel.author = options.author
        if options.license:
            mlmodel.license = options.license
        if options.description:
            mlmodel.short_description = options.description
        if options.version:
            mlmodel.version = options.version
    return mlmodel


def embed_coreml(path, block):
    """Rewrite a saved .mlpackage/.mlmodel with the provenance entry (kept beside, then swapped)."""
    import coremltools as ct

    path = os.fspath(path).rstrip("/")
    model = ct.models.MLModel(path, skip_model_load=True)
    if model.user_defined_metadata.get(KEY) == _dumps(block):
        return
    model.user_defined_metadata[KEY] = _dumps(block)
    base, ext = os.path.splitext(path)
    tmp = base + ".meta" + ext
    model.save(tmp)
    if os.path.isdir(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)
    os.rename(tmp, path)
