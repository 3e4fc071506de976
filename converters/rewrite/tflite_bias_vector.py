"""A convolution's bias held as a constant of shape [1, 1, 1, C] (onnx2tf writes PP-OCR's
detector's TRANSPOSE_CONV bias so) becomes the same values as a vector [C].

TFLite's quantizer refuses any other shape ("Expected bias tensor to be a vector"), so there
was no int8 and no Edge TPU model; the TFLite kernels read the bias as C values either way, so
the reshaped copy computes the same. A bias shared with another op gets its own copy.
"""

from converters.rewrite import rewrite
from converters.rewrite.tflite import QUANTIZER, _codes, _schema

# builtin op name -> index of its bias input
BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3}


def _found(model, schema):
    """[(op, bias input position)] whose bias is a float32 constant of C values, C the output's
    channels, held in more than one dimension."""
    by_code = {getattr(schema.BuiltinOperator, k): v for k, v in BIAS_INPUT.items()}
    codes = _codes(model)
    g = model.subgraphs[0]
    out = []
    for op in g.operators:
        pos = by_code.get(codes[op.opcodeIndex])
        if pos is None or len(op.inputs) <= pos or op.inputs[pos] < 0:
            continue
        bias, result = g.tensors[op.inputs[pos]], g.tensors[op.outputs[0]]
        data = model.buffers[bias.buffer].data if bias.buffer else None
        shape = [int(d) for d in bias.shape] if bias.shape is not None else []
        channels = int(result.shape[-1]) if result.shape is not None and len(result.shape) else -1
        if (data is None or len(data) == 0 or bias.type != schema.TensorType.FLOAT32
                or len(shape) == 1 or not shape or max(shape) != channels
                or int(_prod(shape)) != channels):
            continue
        out.append((op, pos))
    return out


def _prod(shape):
    n = 1
    for d in shape:
        n *= d
    return n


@rewrite("tflite", "bias_vector", needed_by=(QUANTIZER,))
class BiasVector:
    pattern = "convolution biases not held as vectors"   # named when --no-rewrite refuses
    describe = "reshaped {n} convolution bias(es) into vectors for TFLite's quantizer"

    @staticmethod
    def matches(model_bytes, options=None):
        fu = _schema()
        return len(_found(fu.convert_bytearray_to_object(bytearray(model_bytes)), fu.schema_fb))

    @staticmethod
    def apply(model_bytes, options=None):
        import copy

        import numpy as np

        fu = _schema()
        schema = fu.schema_fb
        model = fu.convert_bytearray_to_object(bytearray(model_bytes))
        found = _found(model, schema)
        if not found:
            return model_bytes, 0
        g = model.subgraphs[0]
        for op, pos in found:
            old = g.tensors[op.inputs[pos]]
            new = copy.deepcopy(old)
            new.shape = np.array([_prod([int(d) for d in old.shape])], np.int32)
            new.shapeSignature = None
            buf = schema.BufferT()
            buf.data = np.array(model.buffers[old.buffer].data, np.uint8)
            model.buffers.append(buf)
            new.buffer = len(model.buffers) - 1
            g.tensors.append(new)
            op.inputs[pos] = len(g.tensors) - 1
        return bytes(fu.convert_object_to_bytearray(model)), len(found)
