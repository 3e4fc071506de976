"""Every TFLite artefact edgeport keeps runs on plain LiteRT: no Flex (TensorFlow) ops, no
custom op the plain interpreter cannot resolve.

A TFLite file with `FlexErf` or another Select-TF op loads only with TensorFlow's Flex
delegate, which a device running ai-edge-litert or tflite-runtime does not have; TensorFlow's
own `tf.lite.Interpreter` adds that delegate silently, so such a file would pass validation
here and fail on the device. `require_plain_litert` reads the op table, then loads and
allocates the file in the plain interpreter (ai-edge-litert, else tflite-runtime; never
TensorFlow's), and raises one line naming the ops otherwise.

May import: edge/ only.
"""

from edge.errors import EdgeportError, first_line
from edge.tflite_model import EDGETPU_CUSTOM_OP, TFLiteModel

FLEX_PREFIX = "Flex"
PLAIN_BACKENDS = ("ai_edge_litert", "tflite_runtime")


class NotBuiltinOnly(EdgeportError):
    """A TFLite model that needs ops the plain LiteRT interpreter does not have."""


def flex_ops(model):
    """The Select-TF ops of a parsed TFLiteModel, by TensorFlow name (FlexErf -> Erf)."""
    return sorted({c[len(FLEX_PREFIX):] for c in model.custom_ops() if c.startswith(FLEX_PREFIX)})


def _plain_interpreter():
    from edge.interpreter import load_backend

    for name in PLAIN_BACKENDS:
        try:
            return load_backend(name)
        except EdgeportError:
            continue
    return None


def require_plain_litert(path, what="the TFLite model"):
    """Raise NotBuiltinOnly unless the TFLite file at `path` loads and allocates in the plain
    LiteRT interpreter. Returns the backend name that loaded it (None when no plain
    interpreter is installed: then only the op table was checked)."""
    model = TFLiteModel.load(path)
    flex = flex_ops(model)
    if flex:
        raise NotBuiltinOnly(f"{what} needs TensorFlow (Flex) ops that plain LiteRT does not have: "
                             f"{', '.join(flex)}",
                             "no builtin-only form of them was found; ONNX or Core ML can carry it")
    if EDGETPU_CUSTOM_OP in model.custom_ops():
        return None  # runs only with the Edge TPU delegate; its compiler checked it
    backend = _plain_interpreter()
    if backend is None:
        return None
    try:
        interp = backend.Interpreter(model_path=str(path))
        interp.allocate_tensors()
    except Exception as e:  # RuntimeError/ValueError from the native interpreter
        raise NotBuiltinOnly(f"{what} does not load in plain LiteRT ({backend.name}): "
                             f"{first_line(e)}") from None
    return backend.name
