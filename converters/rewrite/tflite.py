"""TFLite rewrites (bytes -> bytes), on the flatbuffer through TensorFlow's flatbuffer_utils."""

from converters.rewrite import rewrite
from converters.tflite_objects import drop_unused_opcodes
from edge.errors import require

# Tools that read a TFLite flatbuffer and refuse these ops.
TF2ONNX, QUANTIZER = "tflite -> onnx", "tflite -> tflite-int8"


def _schema():
    return require("tensorflow.lite.tools.flatbuffer_utils", "convert", "rewriting a TFLite model")


def builtin_names(schema):
    """{builtin operator code: its name ('CONV_2D')} of a TFLite schema module."""
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _codes(model):
    return [max(oc.builtinCode, oc.deprecatedBuiltinCode) for oc in model.operatorCodes]


def unread_dropped(ops, outputs, removable=None):
    """`ops` less, to a fixed point, the ops whose outputs no op of `ops` reads and that are
    no graph output (of `outputs`); with `removable`, only ops for which it is true go."""
    while True:
        read = {int(t) for op in ops for t in op.inputs} | {int(t) for t in outputs}
        keep = [op for op in ops if (removable is not None and not removable(op))
                or any(int(t) in read for t in op.outputs)]
        if len(keep) == len(ops):
            return keep
        ops = keep


def _ops(model, builtin):
    """[(op index, op)] of the main graph's ops of this builtin code."""
    codes = _codes(model)
    return [(i, op) for i, op in enumerate(model.subgraphs[0].operators)
            if codes[op.opcodeIndex] == builtin]


def count_ops(model_bytes, name):
    """How many ops of the builtin `name` ('DENSIFY', 'RFFT2D') the main graph holds: the
    pattern count of a rewrite of one builtin."""
    fu = _schema()
    model = fu.convert_bytearray_to_object(bytearray(model_bytes))
    return len(_ops(model, getattr(fu.schema_fb.BuiltinOperator, name)))


def _run_keeping_tensors(model_bytes):
    """The TFLite interpreter after one run on zero inputs, every tensor kept (built-in
    kernels only: no delegate takes the constants over)."""
    import warnings

    import numpy as np
    from tensorflow.lite.python.interpreter import Interpreter, OpResolverType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interp = Interpreter(model_content=bytes(model_bytes), experimental_preserve_all_tensors=True,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    interp.invoke()
    return interp


@rewrite("tflite", "densify", needed_by=(TF2ONNX, QUANTIZER))
class Densify:
    """Sparse constant weights behind a DENSIFY op (MediaPipe's sparse detectors) become the
    dense constant DENSIFY computes: TFLite's own kernel decodes the sparsity parameters, the
    op is removed and its consumers read the constant. tf2onnx ("cannot convert op DENSIFY")
    and TFLite's quantizer ("Quantization not yet supported for op: 'DENSIFY'") refuse it."""

    describe = "rewrote {n} DENSIFY into dense constants"
    pattern = "DENSIFY"     # what the tool refuses (named when --no-rewrite refuses the route)

    @staticmethod
    def matches(model_bytes, options=None):
        return count_ops(model_bytes, "DENSIFY")

    @staticmethod
    def apply(model_bytes, options=None):
        import numpy as np

        fu = _schema()
        schema = fu.schema_fb
        model = fu.convert_bytearray_to_object(bytearray(model_bytes))
        found = _ops(model, schema.BuiltinOperator.DENSIFY)
        if not found:
            return model_bytes, 0
        interp = _run_keeping_tensors(model_bytes)
        g = model.subgraphs[0]
        drop = set()
        for i, op in found:
            src, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
            dense = np.ascontiguousarray(interp.get_tensor(op.outputs[0]))
            if list(dense.shape) != [int(d) for d in out.shape]:
                raise RuntimeError(f"DENSIFY output {out.name!r} has shape {list(dense.shape)}, "
                                   f"the model says {list(out.shape)}")
            buf = schema.BufferT()
            buf.data = np.frombuffer(dense.tobytes(), np.uint8)
            model.buffers.append(buf)
            out.buffer = len(model.buffers) - 1
            model.buffers[src.buffer].data = None       # the sparse values, now unused
            src.buffer, src.sparsity = out.buffer, None
            drop.add(i)
        g.operators = [op for i, op in enumerate(g.operators) if i not in drop]
        drop_unused_opcodes(model)
        return bytes(fu.convert_object_to_bytearray(model)), len(drop)
