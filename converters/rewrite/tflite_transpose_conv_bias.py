"""MediaPipe's custom Convolution2DTransposeBias (the selfie segmentation models) becomes
TFLite's builtin TRANSPOSE_CONV followed by an ADD of the bias.

tf2onnx ("uses custom ops") and TFLite's quantizer (its calibrator runs built-in ops only)
refuse the custom op. The builtin takes the same OHWI weights; its padding is given by the
output shape, which is written as the custom op computes it (converters.mediapipe_ops), and
the rewrite is made only where the builtin's padding offset is the custom kernel's (else that
op is left alone, and the tool's refusal stands). The bias is a separate ADD, not the
builtin's optional fourth input, which tf2onnx's TRANSPOSE_CONV handler ignores.
"""

from converters import mediapipe_ops as mp
from converters.rewrite import rewrite
from converters.rewrite.tflite import QUANTIZER, TF2ONNX, _schema
from converters.tflite_objects import drop_unused_opcodes


def _builtin_offset(same, out_size, kernel, stride):
    """The padding offset TFLite's builtin TRANSPOSE_CONV uses for an output of `out_size`
    (kernels/padding.h: ComputePaddingHeightWidth on the output's size)."""
    n = (out_size + stride - 1) // stride if same else (out_size - kernel + stride) // stride
    return max(((n - 1) * stride + kernel - out_size) // 2, 0)


def _plan(model, g, op):
    """(options, output shape) when this custom op can become the builtin exactly, else None."""
    try:
        opts = mp.transpose_conv_options(op.customOptions)
    except ValueError:
        return None
    if len(op.inputs) != 3 or len(op.outputs) != 1:
        return None
    x, w = (list(g.tensors[i].shape) for i in op.inputs[:2])
    if len(x) != 4 or len(w) != 4 or min(x + w) < 1:
        return None
    out_h, out_w, top, left = mp.output_hw(opts, x[1], x[2], w[1], w[2])
    same = opts.padding == mp.PADDING_SAME
    if (_builtin_offset(same, out_h, w[1], opts.stride_h) != top
            or _builtin_offset(same, out_w, w[2], opts.stride_w) != left):
        return None
    return opts, [x[0], out_h, out_w, w[0]]


def _found(model):
    codes = model.operatorCodes
    g = model.subgraphs[0]
    out = []
    for op in g.operators:
        code = codes[op.opcodeIndex].customCode
        if code is not None and bytes(code).decode(errors="replace") == mp.CONVOLUTION_2D_TRANSPOSE_BIAS:
            plan = _plan(model, g, op)
            if plan:
                out.append((op, plan))
    return out


def _opcode(model, schema, builtin):
    for i, oc in enumerate(model.operatorCodes):
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == builtin and not oc.customCode:
            return i
    oc = schema.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = builtin, min(builtin, 127), 1
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def _tensor(model, g, schema, name, shape, dtype, data=None):
    import numpy as np

    t = schema.TensorT()
    t.name, t.shape, t.type = name, np.array(shape, np.int32), dtype
    buf = schema.BufferT()
    if data is not None:
        buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
    model.buffers.append(buf)
    t.buffer = len(model.buffers) - 1
    g.tensors.append(t)
    return len(g.tensors) - 1


def _replace(model, g, schema, op, opts, shape):
    """[TRANSPOSE_CONV, ADD] computing what `op` computes, into its own output tensor."""
    import numpy as np

    out = g.tensors[op.outputs[0]]
    name = bytes(out.name).decode(errors="replace")
    sizes = _tensor(model, g, schema, name + "/output_shape", [4], schema.TensorType.INT32,
                    np.array(shape, np.int32))
    conv_out = _tensor(model, g, schema, name + "/transpose_conv", shape, schema.TensorType.FLOAT32)
    conv = schema.OperatorT()
    conv.opcodeIndex = _opcode(model, schema, schema.BuiltinOperator.TRANSPOSE_CONV)
    conv.inputs, conv.outputs = np.array([sizes, op.inputs[1], op.inputs[0]], np.int32), np.array([conv_out], np.int32)
    conv.builtinOptionsType = schema.BuiltinOptions.TransposeConvOptions
    conv.builtinOptions = schema.TransposeConvOptionsT()
    conv.builtinOptions.padding = schema.Padding.SAME if opts.padding == mp.PADDING_SAME else schema.Padding.VALID
    conv.builtinOptions.strideW, conv.builtinOptions.strideH = opts.stride_w, opts.stride_h
    add = schema.OperatorT()
    add.opcodeIndex = _opcode(model, schema, schema.BuiltinOperator.ADD)
    add.inputs, add.outputs = np.array([conv_out, op.inputs[2]], np.int32), np.array(op.outputs, np.int32)
    add.builtinOptionsType = schema.BuiltinOptions.AddOptions
    add.builtinOptions = schema.AddOptionsT()
    return [conv, add]


@rewrite("tflite", "transpose_conv_bias", needed_by=(TF2ONNX, QUANTIZER))
class TransposeConvBias:
    pattern = "Convolution2DTransposeBias (MediaPipe custom op)"   # named when --no-rewrite refuses
    describe = "rewrote {n} Convolution2DTransposeBias (MediaPipe custom op) into TRANSPOSE_CONV + ADD"

    @staticmethod
    def matches(model_bytes, options=None):
        fu = _schema()
        return len(_found(fu.convert_bytearray_to_object(bytearray(model_bytes))))

    @staticmethod
    def apply(model_bytes, options=None):
        fu = _schema()
        schema = fu.schema_fb
        model = fu.convert_bytearray_to_object(bytearray(model_bytes))
        found = _found(model)
        if not found:
            return model_bytes, 0
        g = model.subgraphs[0]
        new = {id(op): _replace(model, g, schema, op, *plan) for op, plan in found}
        g.operators = [o for op in g.operators for o in new.get(id(op), [op])]
        drop_unused_opcodes(model)
        return bytes(fu.convert_object_to_bytearray(model)), len(found)
