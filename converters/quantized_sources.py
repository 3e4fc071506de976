"""Quantized sources on routes that cannot carry them: refused before any hop runs.

onnx2tf makes float TFLite models from float ONNX graphs. Given the ONNX tf2onnx writes for
a quantized TFLite (Coral's uint8 MobileNets), it takes the NHWC uint8 image input for NCHW
(UINT8[1,224,3,224]), keeps the integer input on a float model and computes garbage (top-1
0/10 against the source). So a route through onnx2tf is refused, in one line naming the
integer input, when the model entering it would have integer (quantized) image inputs; the
quantized graph still converts to ONNX and ORT, which keep its integer I/O and validate.

May import: edge/ and the converters root.
"""

from converters import formats
from edge.errors import InputError
from edge.ort import ONNX_TO_NUMPY

INTEGER_TYPES = ("UINT8", "INT8", "INT16", "uint8", "int8", "int16")
_ONNX_INTEGER = {e: d.name for e, d in ONNX_TO_NUMPY.items() if d.name in INTEGER_TYPES}


def integer_inputs(source):
    """[(name, dtype)] of the source model's integer (quantized) inputs; [] when none or when
    the format is not one whose inputs are read here."""
    if source.format in (formats.TFLITE, formats.TFLITE_INT8, formats.EDGETPU):
        from edge.tflite_model import TFLiteModel

        return [(t.name, t.dtype) for t in TFLiteModel.load(source.path).inputs()
                if t.dtype in INTEGER_TYPES]
    if source.format == formats.ONNX:
        model = formats.load_onnx(source.path, load_external_data=False)
        inits = {t.name for t in model.graph.initializer}
        return [(i.name, _ONNX_INTEGER[i.type.tensor_type.elem_type]) for i in model.graph.input
                if i.name not in inits and i.type.tensor_type.elem_type in _ONNX_INTEGER]
    return []


def refuse_quantized_routes(source, routes, refused):
    """Move to `refused` every target whose route runs ONNX -> TFLite (onnx2tf) on a model with
    integer inputs; `routes` and `refused` are planned {target: ...} dicts, changed in place."""
    through = [t for t, route in routes.items()
               if any(c.source == formats.ONNX and c.target == formats.TFLITE for c in route)]
    if not through:
        return
    ints = integer_inputs(source)
    if not ints:
        return
    from edge.files import printable

    named = ", ".join(f"'{printable(n)}' {str(d).upper()}" for n, d in ints)
    for t in through:
        del routes[t]
        refused[t] = InputError(
            f"--to {t} from a quantized model is refused: its input {named} is integer, and the "
            f"ONNX -> TFLite float step (onnx2tf) cannot carry quantized inputs (it would take "
            f"the NHWC integer image for NCHW and compute garbage)",
            "convert the float original of this model to TFLite; --to onnx or ort keep it as it is")
