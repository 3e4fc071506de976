"""TFLite: RFFT2D (a real FFT of a fixed length) becomes MatMuls with constant DFT matrices.

tf2onnx has no conversion for RFFT2D ("Unsupported ops: RFFT2D"): audio models built on
spectrograms (tf.signal.stft, tf.signal.rfft) hit it. A real FFT of a fixed length N is the
product with a constant matrix: Re[k] = sum_n x[n] cos(2 pi k n / N), Im[k] = -sum_n x[n]
sin(2 pi k n / N), k = 0..N/2. Each RFFT2D whose first FFT length is 1 (the one-dimensional
FFT TFLite's converter writes for tf.signal.rfft/stft) becomes two BATCH_MATMULs, one per
part (the input's extra or missing samples: zero rows, as the FFT crops or pads). Its
complex64 result is followed through the ops that only move it (RESHAPE, SQUEEZE,
EXPAND_DIMS: applied to each part) to the ops that read it: COMPLEX_ABS becomes
sqrt(Re*Re + Im*Im), REAL and IMAG the part itself (an ADD of 0), a CAST to float32 the real part (as
TFLite's and TensorFlow's cast of a complex value). A part nobody reads is not computed. Any other reader of the complex value is
refused by name (nothing is rewritten). The artefact is validated against the original.

The products are computed in float64 (a CAST of the frames, float64 DFT matrices, a CAST of
each part back to float32). TFLite's RFFT2D kernel runs its FFT in double precision
(tensorflow/lite/kernels/rfft2d.cc: Ooura's rdft2d on double arrays), so each
bin it gives is the exact one rounded once to float32. A float32 product of length N is off
by about eps * ||frame||, the same for every bin, whatever the summation order: a loud frame's
quiet bins then lose most of their digits, and a log-mel spectrogram (BirdNET) magnifies
that. Measured on 6899 of BirdNET's frames of real recordings (N = 2048), the largest error
of the real part against numpy's float64 FFT: TFLite 1.5e-05, a float32 DFT 1.8e-04 (a
float32 Cooley-Tukey split into two MatMuls with twiddles folded in: 1.0e-04 to 2.4e-04;
the DFT summed in 16 blocks: 5.7e-05); in float64 it is the rounding of the result, as
TFLite's. That rewrite is for tf2onnx (ONNX MatMul on double): TFLite's own BATCH_MATMUL
has no float64 kernel. For TFLite's quantizer ("no int8 kernel for op RFFT2D") a second
rewrite makes the products in float32 (no casts): the int8 model computes them in int8, which
no float64 precision survives. The price: the matrices take twice the bytes
(BirdNET's two cos matrices: 21 MB instead of 10.5; its ONNX is 72.7 MB) and ONNX Runtime's
double MatMul about twice the time (BirdNET's 511 frames x 2048: 115 ms against 53 ms in
float32, best of 15 on a shared 2-core machine). A two-stage Cooley-Tukey DFT in float64 (N = 64 x 32, the
twiddles between two MatMuls) was tried: as exact, 133 KB of constants instead of 16.8 MB, but
slower in ONNX Runtime (206 ms against 143 ms for those frames, real part only), its
transposes, splits and twiddle products on float64 tensors costing more than the MatMul saves.
"""

import copy

from converters.rewrite import rewrite
from converters.rewrite.tflite import (
    QUANTIZER,
    TF2ONNX,
    _codes,
    _ops,
    _schema,
    builtin_names,
    count_ops,
    unread_dropped,
)
from converters.tflite_objects import drop_unused_opcodes

FLOAT32, COMPLEX64, FLOAT64 = 0, 8, 10
_MOVES = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")


def dft_matrices(n_in, fft_length):
    """(cos, -sin) matrices [n_in, fft_length // 2 + 1] (float64): x @ cos is the FFT's real
    part, x @ -sin its imaginary part; rows past fft_length are zero (the FFT crops them)."""
    import numpy as np

    k = np.arange(fft_length // 2 + 1)
    n = np.arange(min(n_in, fft_length))[:, None]
    angle = 2 * np.pi * ((n * k) % fft_length) / fft_length
    re, im = np.zeros((n_in, len(k))), np.zeros((n_in, len(k)))
    re[: len(n)], im[: len(n)] = np.cos(angle), -np.sin(angle)
    return re, im


class _Builder:
    """Adds tensors, constant buffers and ops to a model object (flatbuffer_utils)."""

    def __init__(self, fu, model):
        self.fu, self.schema, self.model = fu, fu.schema_fb, model
        self.g = model.subgraphs[0]
        self.names = builtin_names(self.schema)
        self.made_ops, self.made_consts = set(), []     # id() of the ops made; constants' indices

    def code(self, name):
        builtin = getattr(self.schema.BuiltinOperator, name)
        codes = _codes(self.model)
        if builtin in codes:
            return codes.index(builtin)
        oc = self.schema.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = builtin, min(builtin, 127), 1
        self.model.operatorCodes.append(oc)
        return len(self.model.operatorCodes) - 1

    def tensor(self, name, shape, like=None, data=None, dtype=FLOAT32):
        import numpy as np

        t = self.schema.TensorT()
        t.name, t.type = name.encode(), dtype if data is None else int({np.dtype("float32"): FLOAT32,
                                                                        np.dtype("float64"): FLOAT64,
                                                                        np.dtype("int32"): 2}[data.dtype])
        t.shape = np.array(shape, np.int32)
        if like is not None and like.shapeSignature is not None:
            t.shapeSignature = np.array(like.shapeSignature, np.int32)
        t.buffer = 0
        if data is not None:
            buf = self.schema.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.model.buffers.append(buf)
            t.buffer = len(self.model.buffers) - 1
        self.g.tensors.append(t)
        if data is not None:
            self.made_consts.append(len(self.g.tensors) - 1)
        return len(self.g.tensors) - 1

    def op(self, name, inputs, outputs, options=None, options_type=0):
        o = self.schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.code(name), list(inputs), list(outputs)
        o.builtinOptions, o.builtinOptionsType = options, options_type
        self.made_ops.add(id(o))
        return o

    def binary(self, name, a, b, out):
        s = self.schema
        opts = getattr(s, f"{name.capitalize()}OptionsT")()
        return self.op(name, [a, b], [out], opts, getattr(s.BuiltinOptions, f"{name.capitalize()}Options"))


def _cast(b, src, dst, to):
    opts = b.schema.CastOptionsT()
    opts.inDataType, opts.outDataType = FLOAT64 if to == FLOAT32 else FLOAT32, to
    return b.op("CAST", [src], [dst], opts, b.schema.BuiltinOptions.CastOptions)


def _dft_ops(b, x_index, x, base, matrices, parts, out, dtype=FLOAT64):
    """The ops giving each part (float32 tensors `parts`) of the FFT of `x`: one BATCH_MATMUL
    per part with its DFT matrix; in float64 (`dtype`), the frames cast to float64 and each
    result cast back, in float32 the frames and matrices as they are."""
    import numpy as np

    shape = [int(d) for d in out.shape]
    ops, x_in = [], x_index
    if dtype == FLOAT64:
        x_in = b.tensor(base + "/frames_float64", [int(d) for d in x.shape], x, dtype=FLOAT64)
        ops.append(_cast(b, x_index, x_in, FLOAT64))
    opts = b.schema.BatchMatMulOptionsT()
    for t, mat, part in zip(parts, matrices, ("cos", "sin")):
        if dtype != FLOAT64:
            c = b.tensor(f"{base}/dft_{part}", mat.shape, data=mat.astype(np.float32))
            ops.append(b.op("BATCH_MATMUL", [x_in, c], [t], copy.deepcopy(opts),
                            b.schema.BuiltinOptions.BatchMatMulOptions))
            continue
        c = b.tensor(f"{base}/dft_{part}", mat.shape, data=mat)
        p64 = b.tensor(f"{base}/{part}_float64", shape, out, dtype=FLOAT64)
        ops += [b.op("BATCH_MATMUL", [x_in, c], [p64], copy.deepcopy(opts),
                     b.schema.BuiltinOptions.BatchMatMulOptions), _cast(b, p64, t, FLOAT32)]
    return ops


def _readers(g):
    out = {}
    for i, op in enumerate(g.operators):
        for t in op.inputs:
            if t >= 0:
                out.setdefault(int(t), []).append(i)
    return out


def _plan(b, found):
    """{op index: 'rfft' | 'move' | 'abs' | 'real' | 'imag'} of the ops to replace, or raise
    naming the reader of a complex value that has no rewrite."""
    import numpy as np

    g, codes = b.g, _codes(b.model)
    readers, kinds = _readers(g), {}
    todo = []
    for i, op in found:
        x, length = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
        data = b.model.buffers[length.buffer].data
        lengths = np.frombuffer(bytes(data) if data is not None else b"", np.int32)
        if len(lengths) != 2 or lengths[0] != 1 or x.type != FLOAT32 or int(x.shape[-2]) != 1:
            raise RuntimeError(f"RFFT2D {g.tensors[op.outputs[0]].name.decode(errors='replace')!r}: only "
                               "a one-dimensional real FFT of a constant length on float32 is rewritten")
        kinds[i] = "rfft"
        todo.append(int(op.outputs[0]))
    while todo:
        t = todo.pop()
        if t in g.outputs:
            raise RuntimeError("an output of the model is complex; no real rewrite can give it")
        for r in readers.get(t, []):
            name = b.names[codes[g.operators[r].opcodeIndex]]
            if name in _MOVES and g.operators[r].inputs[0] == t:
                kinds[r] = "move"
                todo.append(int(g.operators[r].outputs[0]))
            elif name in ("COMPLEX_ABS", "REAL", "IMAG"):
                kinds[r] = {"COMPLEX_ABS": "abs", "REAL": "real", "IMAG": "imag"}[name]
            elif name == "CAST" and g.tensors[g.operators[r].outputs[0]].type == FLOAT32:
                kinds[r] = "real"     # complex64 -> float32 keeps the real part (BirdNET's spectrogram)
            else:
                raise RuntimeError(f"{name} reads the complex result of RFFT2D; only {', '.join(_MOVES)}, "
                                   "COMPLEX_ABS, REAL, IMAG and a CAST to float32 have a rewrite")
    return kinds


def _prune(g, ops, b, model):
    """`ops` less the ops this rewrite made whose outputs nobody reads (the imaginary part a
    CAST or REAL does not need), and the constants only they read emptied."""
    ops = unread_dropped(ops, g.outputs, lambda op: id(op) in b.made_ops)
    read = {int(t) for op in ops for t in op.inputs}
    for t in b.made_consts:
        if t not in read and g.tensors[t].buffer:
            model.buffers[g.tensors[t].buffer].data = None
    return ops


def rewrite_rfft2d(model_bytes, dtype=FLOAT64):
    """(new model bytes, number of RFFT2D rewritten), the products computed in `dtype`
    (FLOAT64 for tf2onnx, FLOAT32 for TFLite's quantizer)."""
    import numpy as np

    fu = _schema()
    model = fu.convert_bytearray_to_object(bytearray(model_bytes))
    found = _ops(model, fu.schema_fb.BuiltinOperator.RFFT2D)
    if not found:
        return model_bytes, 0
    b = _Builder(fu, model)
    g = b.g
    kinds = _plan(b, found)
    parts = {}       # complex tensor -> (real tensor, imaginary tensor)
    new_ops = []
    for i, op in enumerate(list(g.operators)):
        kind = kinds.get(i)
        if kind is None:
            new_ops.append(op)
            continue
        out = g.tensors[op.outputs[0]]
        shape, base = [int(d) for d in out.shape], out.name.decode(errors="replace")
        if kind in ("rfft", "move"):
            re_t = b.tensor(base + "/real", shape, out)
            im_t = b.tensor(base + "/imag", shape, out)
        if kind == "rfft":
            x = g.tensors[op.inputs[0]]
            length = int(np.frombuffer(bytes(model.buffers[g.tensors[op.inputs[1]].buffer].data),
                                       np.int32)[1])
            new_ops += _dft_ops(b, op.inputs[0], x, base, dft_matrices(int(x.shape[-1]), length),
                                (re_t, im_t), out, dtype)
            parts[int(op.outputs[0])] = (re_t, im_t)
        elif kind == "move":
            src = parts[int(op.inputs[0])]
            for t, part in zip((re_t, im_t), src):
                o = copy.deepcopy(op)
                o.inputs = [part] + list(op.inputs[1:])
                o.outputs = [t]
                b.made_ops.add(id(o))
                new_ops.append(o)
            parts[int(op.outputs[0])] = (re_t, im_t)
        elif kind == "abs":
            re_t, im_t = parts[int(op.inputs[0])]
            sq = [b.tensor(f"{base}/{p}_squared", shape, out) for p in ("real", "imag")]
            total = b.tensor(base + "/power", shape, out)
            new_ops += [b.binary("MUL", re_t, re_t, sq[0]), b.binary("MUL", im_t, im_t, sq[1]),
                        b.binary("ADD", sq[0], sq[1], total), b.op("SQRT", [total], [op.outputs[0]])]
        else:   # REAL / IMAG / CAST: the part itself, written by an ADD of 0 (any shape, also open)
            part = parts[int(op.inputs[0])][0 if kind == "real" else 1]
            zero = b.tensor(base + "/zero", [], data=np.zeros((), np.float32))
            new_ops.append(b.binary("ADD", part, zero, op.outputs[0]))
    g.operators = _prune(g, new_ops, b, model)
    drop_unused_opcodes(model)
    return bytes(fu.convert_object_to_bytearray(model)), len(found)


@rewrite("tflite", "rfft2d_matmul", needed_by=(TF2ONNX,))
class RFFT2DMatMul:
    """RFFT2D (a real FFT of a fixed length) becomes MatMuls with constant DFT matrices."""

    describe = "rewrote {n} RFFT2D into MatMul with constant DFT matrices"
    pattern = "RFFT2D"

    @staticmethod
    def matches(model_bytes, options=None):
        return count_ops(model_bytes, "RFFT2D")

    @staticmethod
    def apply(model_bytes, options=None):
        return rewrite_rfft2d(model_bytes)


@rewrite("tflite", "rfft2d_matmul_float32", needed_by=(QUANTIZER,))
class RFFT2DMatMulFloat32:
    """RFFT2D becomes float32 MatMuls with constant DFT matrices, for TFLite's quantizer ("no
    int8 kernel for op RFFT2D"; it has int8 BATCH_MATMUL, not float64). The int8 model computes
    the products in int8 anyway: the float64 precision of the tf2onnx rewrite could not survive
    it, and the artefact is validated against the original."""

    describe = "rewrote {n} RFFT2D into float32 MatMul with constant DFT matrices for TFLite's quantizer"
    pattern = "RFFT2D"

    @staticmethod
    def matches(model_bytes, options=None):
        return count_ops(model_bytes, "RFFT2D")

    @staticmethod
    def apply(model_bytes, options=None):
        return rewrite_rfft2d(model_bytes, FLOAT32)
