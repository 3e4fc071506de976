"""MediaPipe's face-geometry custom ops (the face landmark model with attention) become builtin
TFLite ops, so that tf2onnx and TFLite's quantizer take the model (both refuse custom ops).
The arithmetic is the kernels' (converters.mediapipe_ops, version 2 of each op); the
artefact is validated against the original, run with the numpy references.

- TransformLandmarks (landmarks [1, N, 2|3], matrix [1, 4, 4]): x, y times the matrix's
  upper-left 2x2 (BATCH_MATMUL) plus its translation column; z, if any, concatenated back.
- Landmarks2TransformMatrix (landmarks [1, N, 3]): the direction from the left to the right
  rotation landmark, normalised (SUB, SUM, RSQRT, MUL: cos and sin of its angle without
  ATAN2; 4e-6 added to its x gives the kernel's atan2(0, 0) = 0 when both coincide), turned
  by the target rotation (a constant 2x2); the subset (GATHER) rotated by BATCH_MATMUL; its
  box (REDUCE_MAX, REDUCE_MIN) gives size and centre; the 4x4 assembled by PAD, CONCATENATION.
- TransformTensorBilinear (data [1, H, W, C], matrix): the output pixels' positions (a
  constant grid times the matrix, half-pixel shifted as the kernel); a position outside the
  data gets no weight (a mask of RELU and MINIMUM, 0 beyond 1e-3 pixel out); bilinear weights as
  tents max(0, 1 - |i - x|) per row and column (SUB, ABS, RELU), their product a [P, H*W]
  matrix times the data as [H*W, C] (BATCH_MATMUL). No FLOOR, CAST, comparison or
  computed GATHER: every op has an int8 kernel in TFLite's quantizer.

Only batch 1 and the shapes above are rewritten; any other op is left alone (the tool's
refusal stands).
"""

import numpy as np

from converters import mediapipe_ops as mp
from converters.rewrite import rewrite
from converters.rewrite.tflite import QUANTIZER, TF2ONNX, _schema
from converters.rewrite.tflite_rfft import _Builder
from converters.tflite_objects import drop_unused_opcodes

EPSILON = 4e-6      # added to the rotation direction's x: atan2(0, 0) = 0 when the two coincide
# (an angle change of at most 4e-6 / their distance)
HALF_PIXEL = 0.5    # TransformTensorBilinear v2 samples pixel centres (v1 did not)
OUTSIDE = 1e3       # how fast a position's weights vanish outside the data (per pixel)


class _Ops(_Builder):
    """_Builder plus the few builtins the three rewrites use, each making its output tensor."""

    def __init__(self, fu, model, base):
        super().__init__(fu, model)
        self.base, self.ops, self.k = base, [], 0

    def t(self, shape, dtype=0, out=None):
        if out is not None:
            return out
        self.k += 1
        i = self.tensor(f"{self.base}/{self.k}", shape)
        self.g.tensors[i].type = dtype
        return i

    def const(self, value, dtype=np.float32):
        self.k += 1
        value = np.asarray(value, dtype)
        return self.tensor(f"{self.base}/{self.k}", list(value.shape), data=value)

    def emit(self, name, inputs, shape, options=None, kind=None, dtype=0, out=None):
        o = self.t(shape, dtype, out)
        opts_type = getattr(self.schema.BuiltinOptions, kind) if kind else 0
        self.ops.append(self.op(name, inputs, [o], options, opts_type))
        return o

    def binary(self, name, a, b, shape, out=None):
        kind = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions", "DIV": "DivOptions",
                "MINIMUM": "MaximumMinimumOptions", "MAXIMUM": "MaximumMinimumOptions"}[name]
        return self.emit(name, [a, b], shape, getattr(self.schema, kind + "T")(), kind, out=out)

    def slice(self, x, begin, size):
        return self.emit("SLICE", [x, self.const(begin, np.int32), self.const(size, np.int32)],
                         size, self.schema.SliceOptionsT(), "SliceOptions", dtype=self.g.tensors[x].type)

    def reshape(self, x, shape, out=None):
        opts = self.schema.ReshapeOptionsT()
        opts.newShape = list(shape)
        return self.emit("RESHAPE", [x, self.const(shape, np.int32)], shape, opts, "ReshapeOptions", out=out)

    def matmul(self, a, b, shape, adj_y=False):
        opts = self.schema.BatchMatMulOptionsT()
        opts.adjY = adj_y
        return self.emit("BATCH_MATMUL", [a, b], shape, opts, "BatchMatMulOptions")

    def reduce(self, name, x, axis, shape):
        opts = self.schema.ReducerOptionsT()
        opts.keepDims = True
        return self.emit(name, [x, self.const([axis], np.int32)], shape, opts, "ReducerOptions")

    def concat(self, xs, axis, shape, out=None):
        opts = self.schema.ConcatenationOptionsT()
        opts.axis = axis
        return self.emit("CONCATENATION", xs, shape, opts, "ConcatenationOptions", out=out)

    def gather(self, x, idx, axis, shape):
        opts = self.schema.GatherOptionsT()
        opts.axis = axis
        return self.emit("GATHER", [x, idx], shape, opts, "GatherOptions")



def _shape(g, i):
    return [int(d) for d in g.tensors[i].shape]


def _plan(g, code, op):
    """The op's options when it can be rewritten (batch 1, the kernel's shapes), else None."""
    ins = [_shape(g, i) for i in op.inputs]
    out = _shape(g, op.outputs[0]) if len(op.outputs) == 1 else []
    try:
        if code == mp.TRANSFORM_LANDMARKS and len(ins) == 2:
            ok = len(ins[0]) == 3 and ins[0][0] == 1 and ins[0][2] in (2, 3) and ins[1] == [1, 4, 4]
            return {} if ok and out == ins[0] else None
        if code == mp.LANDMARKS_TO_TRANSFORM_MATRIX and len(ins) == 1:
            opts = mp.matrix_options(op.customOptions)
            ok = len(ins[0]) == 3 and ins[0][0] == 1 and ins[0][2] >= 2 and out == [1, 4, 4]
            return opts if ok and max(opts.subset + [opts.left, opts.right]) < ins[0][1] else None
        if code == mp.TRANSFORM_TENSOR_BILINEAR and len(ins) == 2:
            hw = mp.tensor_bilinear_options(op.customOptions)
            ok = len(ins[0]) == 4 and ins[0][0] == 1 and ins[1] == [1, 4, 4]
            return hw if ok and out == [1, *hw, ins[0][3]] else None
    except ValueError:
        return None
    return None


def _found(model):
    codes, g, out = model.operatorCodes, model.subgraphs[0], []
    for op in g.operators:
        code = codes[op.opcodeIndex].customCode
        code = bytes(code).decode(errors="replace") if code is not None else None
        if code in mp.FACE_GEOMETRY:
            plan = _plan(g, code, op)
            if plan is not None:
                out.append((op, code, plan))
    return out


def _affine(b, matrix):
    """(upper-left 2x2 [1, 2, 2], translation [1, 1, 2]) of a [1, 4, 4] matrix."""
    a = b.slice(matrix, [0, 0, 0], [1, 2, 2])
    t = b.reshape(b.slice(matrix, [0, 0, 3], [1, 2, 1]), [1, 1, 2])
    return a, t


def _landmarks(b, op, _opts):
    lm, matrix = (int(i) for i in op.inputs)
    _, n, d = _shape(b.g, lm)
    a, t = _affine(b, matrix)
    xy = lm if d == 2 else b.slice(lm, [0, 0, 0], [1, n, 2])
    moved = b.matmul(xy, a, [1, n, 2], adj_y=True)          # x' = a00 x + a01 y
    out = int(op.outputs[0])
    if d == 2:
        b.binary("ADD", moved, t, [1, n, 2], out=out)
        return
    z = b.slice(lm, [0, 0, 2], [1, n, 1])
    b.concat([b.binary("ADD", moved, t, [1, n, 2]), z], 2, [1, n, 3], out=out)


def _matrix(b, op, opts):
    lm = int(op.inputs[0])
    _, n, d = _shape(b.g, lm)
    xy = b.slice(lm, [0, 0, 0], [1, n, 2])
    k = len(opts.subset)
    left = b.gather(xy, b.const([opts.left], np.int32), 1, [1, 1, 2])
    right = b.gather(xy, b.const([opts.right], np.int32), 1, [1, 1, 2])
    direction = b.binary("ADD", b.binary("SUB", right, left, [1, 1, 2]), b.const([EPSILON, 0.0]), [1, 1, 2])
    # (cos, sin) of the direction's angle: times RSQRT of its squared length (TFLite's quantizer
    # has no int8 kernel for SQRT or DIV; onnx2coreml no lowering for L2_NORMALIZATION's)
    squared = b.reduce("SUM", b.binary("MUL", direction, direction, [1, 1, 2]), 2, [1, 1, 1])
    unit = b.binary("MUL", direction, b.emit("RSQRT", [squared], [1, 1, 1]), [1, 1, 2])
    ct, st = np.cos(opts.target_rotation), np.sin(opts.target_rotation)
    # r = target - angle: (cos r, sin r) = (cos, sin) @ [[cos t, sin t], [sin t, -cos t]]
    cs = b.matmul(unit, b.const([[[ct, st], [st, -ct]]]), [1, 1, 2])
    # rotate(-r) = [[c, s], [-s, c]] from (c, s)
    rot = b.reshape(b.matmul(cs, b.const([[[1, 0, 0, 1], [0, 1, -1, 0]]]), [1, 1, 4]), [1, 2, 2])
    subset = b.gather(xy, b.const(opts.subset, np.int32), 1, [1, k, 2])
    turned = b.matmul(subset, rot, [1, k, 2])                 # rotate(r) of each: p @ rotate(-r)
    hi, lo = b.reduce("REDUCE_MAX", turned, 1, [1, 1, 2]), b.reduce("REDUCE_MIN", turned, 1, [1, 1, 2])
    size = b.binary("SUB", hi, lo, [1, 1, 2])
    middle = b.binary("MUL", b.binary("ADD", hi, lo, [1, 1, 2]), b.const([0.5, 0.5]), [1, 1, 2])
    centre = b.matmul(middle, rot, [1, 1, 2], adj_y=True)     # rotate(-r) of the box's centre
    scale = b.binary("MUL", size, b.const([opts.scale_x / opts.out_w, opts.scale_y / opts.out_h]), [1, 1, 2])
    a = b.binary("MUL", rot, scale, [1, 2, 2])                 # rotate(-r) * scale
    half = b.const([[[opts.out_w / 2, opts.out_h / 2]]])
    shift = b.binary("SUB", centre, b.matmul(half, a, [1, 1, 2], adj_y=True), [1, 1, 2])
    # the zero column by PAD: a constant of zeros would be quantized to scale 0
    padded = b.emit("PAD", [a, b.const([[0, 0], [0, 0], [0, 1]], np.int32)], [1, 2, 3], b.schema.PadOptionsT(),
                    "PadOptions")
    rows = b.concat([padded, b.reshape(shift, [1, 2, 1])], 2, [1, 2, 4])
    b.concat([rows, b.const([[[0, 0, 1, 0], [0, 0, 0, 1]]])], 1, [1, 4, 4], out=int(op.outputs[0]))


def _bilinear(b, op, hw):
    data, matrix = (int(i) for i in op.inputs)
    _, h, w, c = _shape(b.g, data)
    oh, ow = hw
    p = oh * ow
    a, t = _affine(b, matrix)
    yy, xx = np.meshgrid(np.arange(oh) + HALF_PIXEL, np.arange(ow) + HALF_PIXEL, indexing="ij")
    grid = b.const(np.stack([xx.reshape(-1), yy.reshape(-1)], -1)[None])      # [1, P, 2]
    shift = b.binary("ADD", t, b.const([-HALF_PIXEL, -HALF_PIXEL]), [1, 1, 2])
    pos = b.binary("ADD", b.matmul(grid, a, [1, p, 2], adj_y=True), shift, [1, p, 2])
    # a coordinate outside [0, W-1] (or [0, H-1]) zeroes the position's weights: its mask
    # min(1, relu(1 + OUTSIDE x)) * min(1, relu(1 + OUTSIDE (W-1-x))) is 1 inside, 0 beyond
    # 1 / OUTSIDE pixel outside. Arithmetic only, and no tensor that is 0 on every input
    # (calibrated to scale 0, which LiteRT refuses): the quantizer has no int8 kernel for
    # comparisons, LOGICAL_AND or SELECT_V2.
    one = b.const([1.0])
    mask = one
    for k, bias in ((OUTSIDE, [1.0, 1.0]), (-OUTSIDE, [1 + OUTSIDE * (w - 1), 1 + OUTSIDE * (h - 1)])):
        side = b.binary("ADD", b.binary("MUL", pos, b.const([k, k]), [1, p, 2]), b.const(bias), [1, p, 2])
        side = b.binary("MINIMUM", b.emit("RELU", [side], [1, p, 2]), one, [1, p, 2])
        mask = side if mask is one else b.binary("MUL", mask, side, [1, p, 2])
    # bilinear weights as tents: max(0, 1 - |i - x|) is 1 - ax at floor(x), ax at floor(x) + 1
    # and 0 elsewhere (a neighbour beyond the edge is no column: 0, as the kernel reads)
    tents = []
    for axis, n in ((0, w), (1, h)):
        coord = b.slice(pos, [0, 0, axis], [1, p, 1])
        dist = b.emit("ABS", [b.binary("SUB", coord, b.const(np.arange(n)[None, None]), [1, p, n])], [1, p, n])
        tent = b.emit("RELU", [b.binary("SUB", one, dist, [1, p, n])], [1, p, n])
        tents.append(b.binary("MUL", tent, b.slice(mask, [0, 0, axis], [1, p, 1]), [1, p, n]))
    weights = b.binary("MUL", b.reshape(tents[1], [1, p, h, 1]), b.reshape(tents[0], [1, p, 1, w]), [1, p, h, w])
    sampled = b.matmul(b.reshape(weights, [1, p, h * w]), b.reshape(data, [1, h * w, c]), [1, p, c])
    b.reshape(sampled, [1, oh, ow, c], out=int(op.outputs[0]))


REPLACE = {mp.TRANSFORM_LANDMARKS: _landmarks, mp.LANDMARKS_TO_TRANSFORM_MATRIX: _matrix,
           mp.TRANSFORM_TENSOR_BILINEAR: _bilinear}


def rewrite_face_geometry(model_bytes):
    """(new model bytes, number of custom ops replaced)."""
    fu = _schema()
    model = fu.convert_bytearray_to_object(bytearray(model_bytes))
    found = _found(model)
    if not found:
        return model_bytes, 0
    g = model.subgraphs[0]
    new = {}
    for op, code, plan in found:
        name = bytes(g.tensors[op.outputs[0]].name).decode(errors="replace")
        b = _Ops(fu, model, name)
        REPLACE[code](b, op, plan)
        new[id(op)] = b.ops
    g.operators = [o for op in g.operators for o in new.get(id(op), [op])]
    drop_unused_opcodes(model)
    return bytes(fu.convert_object_to_bytearray(model)), len(found)


@rewrite("tflite", "face_geometry", needed_by=(TF2ONNX, QUANTIZER))
class FaceGeometry:
    pattern = "MediaPipe face-geometry custom ops (Landmarks2TransformMatrix, TransformTensorBilinear, " \
              "TransformLandmarks)"
    describe = ("rewrote {n} MediaPipe face-geometry custom ops (Landmarks2TransformMatrix, "
                "TransformTensorBilinear, TransformLandmarks) into builtin ops")

    @staticmethod
    def matches(model_bytes, options=None):
        fu = _schema()
        return len(_found(fu.convert_bytearray_to_object(bytearray(model_bytes))))

    @staticmethod
    def apply(model_bytes, options=None):
        return rewrite_face_geometry(model_bytes)
