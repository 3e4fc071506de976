"""The original TFLite model, run with custom ops the TFLite interpreter cannot resolve but
that have an independent numpy reference here (converters.mediapipe_ops): MediaPipe's
Convolution2DTransposeBias and its face-geometry ops (Landmarks2TransformMatrix,
TransformTensorBilinear, TransformLandmarks). A rewrite's result is validated against this, never against the
rewritten model.

How: a copy of the graph without the custom ops, in which each custom op's output is a graph
input and each of its non-constant inputs a graph output. The ops run in TFLite's order, so
after run k the inputs of the k-th custom op are exact; the reference computes its output,
fed to the next run. With K custom ops, K + 1 runs give the model's outputs.
"""

import numpy as np

from converters import mediapipe_ops as mp
from edge.errors import InputError, require

REFERENCES = {mp.CONVOLUTION_2D_TRANSPOSE_BIAS, *mp.FACE_GEOMETRY}
NOTE = ("source run by TFLite with its {ops} computed by edgeport's numpy reference of "
        "MediaPipe's kernel")


def covers(custom_ops):
    return bool(custom_ops) and set(custom_ops) <= REFERENCES


def _compute(code, inputs, raw_options):
    if code == mp.CONVOLUTION_2D_TRANSPOSE_BIAS:
        return mp.transpose_conv_bias(*inputs, mp.transpose_conv_options(raw_options))
    try:
        if code == mp.LANDMARKS_TO_TRANSFORM_MATRIX and len(inputs) == 1:
            return mp.landmarks_to_transform_matrix(inputs[0], mp.matrix_options(raw_options))
        if code == mp.TRANSFORM_TENSOR_BILINEAR and len(inputs) == 2:
            return mp.transform_tensor_bilinear(*inputs, mp.tensor_bilinear_options(raw_options))
        if code == mp.TRANSFORM_LANDMARKS and len(inputs) == 2:
            return mp.transform_landmarks(*inputs)
    except ValueError as e:
        raise InputError(str(e)) from None
    raise InputError(f"no reference for custom op {code}")


def _constant(model, tensor):
    data = model.buffers[tensor.buffer].data if tensor.buffer else None
    if data is None or len(data) == 0:
        return None
    if tensor.type != 0:   # FLOAT32
        raise InputError("a reference custom op with a non-float32 constant input")
    return np.frombuffer(bytes(np.asarray(data, np.uint8)), np.float32).reshape(list(tensor.shape))


def split_model(model_bytes):
    """(the graph without its custom ops as bytes, [(code, [input index or constant], output
    index, raw options)] in execution order)."""
    fu = require("tensorflow.lite.tools.flatbuffer_utils", "convert", "running a model's custom "
                 "ops by reference")
    model = fu.convert_bytearray_to_object(bytearray(model_bytes))
    g = model.subgraphs[0]
    codes = model.operatorCodes
    ops, keep, inputs, outputs = [], [], list(g.inputs), list(g.outputs)
    for op in g.operators:
        code = codes[op.opcodeIndex].customCode
        if code is None:
            keep.append(op)
            continue
        code = bytes(code).decode(errors="replace")
        if code not in REFERENCES or len(op.outputs) != 1:
            raise InputError(f"no reference for custom op {code}")
        args = []
        for i in op.inputs:
            const = _constant(model, g.tensors[i])
            args.append(int(i) if const is None else const)
            if const is None and i not in outputs:
                outputs.append(i)
        inputs.append(op.outputs[0])
        ops.append((code, args, int(op.outputs[0]), bytes(op.customOptions if op.customOptions is not None else b"")))
    g.operators, g.inputs, g.outputs = keep, np.array(inputs, np.int32), np.array(outputs, np.int32)
    model.signatureDefs = []
    from converters.tflite_objects import drop_unused_opcodes

    drop_unused_opcodes(model)
    return bytes(fu.convert_object_to_bytearray(model)), ops


class ReferenceInterpreter:
    """The subset of TFLite's Interpreter the TFLite runner uses, over the split graph."""

    def __init__(self, path, runtime=None, original_inputs=(), original_outputs=()):
        from edge.interpreter import load_backend

        with open(path, "rb") as f:
            split, self._ops = split_model(f.read())
        backend = load_backend(runtime)
        self.backend = backend.name
        # TFLite's built-in kernels, no default delegate: XNNPack refuses the split graph
        # (outputs that no op reads any more)
        import importlib

        resolver = importlib.import_module(backend.Interpreter.__module__).OpResolverType
        self._it = backend.Interpreter(
            model_content=split,
            experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self._it.allocate_tensors()
        self._in, self._out = list(original_inputs), list(original_outputs)
        self._fed = {}

    def _details(self, details, order):
        by_index = {d["index"]: d for d in details}
        return [by_index[i] for i in order]

    def get_input_details(self):
        return self._details(self._it.get_input_details(), self._in)

    def get_output_details(self):
        return self._details(self._it.get_output_details(), self._out)

    def resize_tensor_input(self, index, shape):
        current = {d["index"]: tuple(d["shape"]) for d in self._it.get_input_details()}
        if tuple(shape) != current.get(index):
            raise InputError("the reference for custom ops runs the model at its own input shapes "
                             f"only, not {list(shape)}")

    def allocate_tensors(self):
        pass

    def set_tensor(self, index, value):
        self._fed[index] = np.asarray(value)

    def invoke(self):
        it = self._it
        shapes = {d["index"]: (d["shape"], d["dtype"]) for d in it.get_input_details()}
        known = {}
        for k in range(len(self._ops) + 1):
            for index, value in self._fed.items():
                it.set_tensor(index, value)
            for _, _, out, _ in self._ops:
                shape, dtype = shapes[out]
                it.set_tensor(out, known.get(out, np.zeros(shape, dtype)))
            it.invoke()
            if k < len(self._ops):
                code, args, out, raw = self._ops[k]
                values = [it.get_tensor(a) if isinstance(a, int) else a for a in args]
                y = _compute(code, values, raw)
                if tuple(y.shape) != tuple(shapes[out][0]):
                    raise InputError(f"{code} computed shape {list(y.shape)}, the model says "
                                     f"{list(shapes[out][0])}")
                known[out] = y

    def get_tensor(self, index):
        return self._it.get_tensor(index)

    def _get_full_signature_list(self):
        return {}
