"""TFLite: the inputs the user fixes with `--fix NAME=VALUE` become constant buffers (bytes -> bytes).

The input tensor (named as the interpreter names it, or by its signature key) is given a
buffer holding the value (the tensor's dtype and shape; a number or a smaller list is
broadcast; a quantized input takes the value as a real number and stores it quantized), and
it leaves the subgraph's and the signatures' inputs. The user asked for it, so every
conversion out of TFLite applies it; validation feeds the original source the same value.
"""

from converters.rewrite import rewrite
from converters.rewrite.fixing import _fixed_inputs, fixed_values
from converters.rewrite.tflite import QUANTIZER, TF2ONNX, _schema

# TFLite TensorType -> numpy dtype name (the types an input can have)
_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16",
           9: "int8", 10: "float64", 12: "uint64", 15: "uint32", 16: "uint16"}


def _array(tensor, value, options, name):
    import numpy as np

    dtype = _DTYPES.get(int(tensor.type))
    if dtype is None:
        raise RuntimeError(f"--fix {name}: the input's TFLite type {tensor.type} is not a number type")
    shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
    q = tensor.quantization
    scale = list(q.scale) if q is not None and q.scale is not None else []
    if scale and len(scale) == 1 and np.issubdtype(np.dtype(dtype), np.integer):
        real = options.input_overrides.fixed_for(name, shape, np.float64)
        zp = int(q.zeroPoint[0]) if q.zeroPoint is not None and len(q.zeroPoint) else 0
        info = np.iinfo(np.dtype(dtype))
        return np.clip(np.round(real / scale[0]) + zp, info.min, info.max).astype(dtype)
    return options.input_overrides.fixed_for(name, shape, np.dtype(dtype))


@rewrite("tflite", "fix_inputs", needed_by=(TF2ONNX, QUANTIZER))
class FixInputs:
    """--fix NAME=VALUE: the input tensor becomes a constant buffer."""

    pattern = "inputs fixed by --fix"   # named when --no-rewrite refuses the route
    describe = "fixed {fixed} as constants"

    @staticmethod
    def wanted(options):
        return bool(fixed_values(options))

    @staticmethod
    def matches(model_bytes, options=None):
        wanted = fixed_values(options)
        if not wanted:
            return 0
        fu = _schema()
        return len(_fixed_inputs(fu.convert_bytearray_to_object(bytearray(model_bytes)), wanted))

    @staticmethod
    def apply(model_bytes, options=None):
        import numpy as np

        wanted = fixed_values(options)
        fu = _schema()
        model = fu.convert_bytearray_to_object(bytearray(model_bytes))
        found = _fixed_inputs(model, wanted) if wanted else []
        if not found:
            return model_bytes, 0, {}
        g = model.subgraphs[0]
        for idx, name in found:
            t = g.tensors[idx]
            value = np.ascontiguousarray(_array(t, wanted[name], options, name))
            buf = fu.schema_fb.BufferT()
            buf.data = np.frombuffer(value.tobytes(), np.uint8)
            model.buffers.append(buf)
            t.buffer = len(model.buffers) - 1
            t.shapeSignature = None
        gone = {idx for idx, _ in found}
        g.inputs = [i for i in g.inputs if int(i) not in gone]
        for sig in model.signatureDefs or ():
            sig.inputs = [s for s in sig.inputs or () if int(s.tensorIndex) not in gone]
        fixed = {name: wanted[name] for _, name in found}
        return bytes(fu.convert_object_to_bytearray(model)), len(found), {
            "fixed": ", ".join(f"{k}={v}" for k, v in fixed.items()), "fixed_arguments": fixed}
