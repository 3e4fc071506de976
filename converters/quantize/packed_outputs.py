"""Packed outputs kept alive through int8: parts with very different ranges normalized apart.

A full-int8 tensor has one scale. When a model output concatenates parts whose ranges differ
by orders of magnitude -- YOLOv8's `[1, 4 + C, N]`, box rows in input pixels (0..640) beside
class-score rows (0..1) -- that one scale is set by the largest part (640 / 255 = 2.5), and
every score becomes 0 or 2.5: the detector is dead while the whole tensor's cosine stays
near 1. Ultralytics' TFLite / Edge TPU export avoids it by dividing the boxes by the image
size inside the model (its head's `format in {"tflite", "edgetpu"}` branch); this is the
same idea as a rewrite of any float TFLite, before calibration:

  1. run the float model on calibration samples and measure every tensor's range;
  2. find each CONCATENATION that reaches a model output through layout ops only
     (RESHAPE, TRANSPOSE, SQUEEZE, EXPAND_DIMS) and whose inputs' ranges differ by at least
     RATIO; divide each wide input by a factor (the image input's size when the part is in
     pixels, else a power of two that brings it to the narrowest part's range), as far
     upstream as it goes without touching any other tensor (`_Rewriter`: into a MUL's
     constant, under it past an ADD of a constant, into an inner concatenation), else by
     a MUL inserted before the concatenation. Dividing upstream matters: TFLite's calibrator
     gives an ADD feeding a MUL the MUL's scale (seen on grid + offset, then x stride), so
     a box centre divided only at the end still loses its offset within the cell;
  3. run both float models once more and read, per output, which slices along which axis
     changed by which factor: the `output_rescale` record, in the artefact's own layout.
     The factors are checked on several samples; a rewrite they do not explain is dropped.

The record goes into the sidecar; every runner multiplies those slices back (edge.tensors.
undo_output_rescale), so validation compares the artefact in the source's units and an
application reads the same numbers. The normalized output keeps the source's shape, name and
order: nothing downstream needs to learn a new layout.
"""

import math

RATIO = 16.0          # parts whose ranges differ less than this share one int8 scale well
_LAYOUT = ("RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS")
_SAMPLES = 16         # calibration samples measured for the ranges


def _fu():
    from edge.errors import require

    return require("tensorflow.lite.tools.flatbuffer_utils", "convert", "full-integer TFLite quantization")


def _run(model_bytes, samples, ranges=None):
    """([{output tensor index: array} per sample], output tensor indices) of the float model
    on `samples`. With a dict `ranges`, also fills {tensor index: max |x|} over every float
    tensor and sample (only the maxima are kept: a large model's tensors times the samples
    would not fit in memory)."""
    import numpy as np

    from converters.quantize.tflite_int8 import _interpreter

    it = _interpreter(model_bytes)
    it.allocate_tensors()
    details = it.get_input_details()
    outs = [d["index"] for d in it.get_output_details()]
    tensors = [t["index"] for t in it.get_tensor_details()] if ranges is not None else []
    runs = []
    for sample in samples:
        for d, x in zip(details, sample):
            it.set_tensor(d["index"], x)
        it.invoke()
        runs.append({i: it.get_tensor(i).copy() for i in outs})
        for i in tensors:
            if _readable(it, i):
                v = it.get_tensor(i)
                if v.dtype.kind == "f" and v.size:
                    ranges[i] = max(ranges.get(i, 0.0), float(np.abs(v).max()))
    return runs, outs


def _readable(it, index):
    try:
        it.get_tensor(index)
        return True
    except ValueError:
        return False


def _factor(wide, narrow, image_size):
    """What a part of range `wide` is divided by so that it sits beside a part of range `narrow`."""
    if image_size and image_size / 4 <= wide <= image_size * 2:
        return float(image_size)           # pixels: normalized by the image size, as exporters do
    return float(2 ** math.ceil(math.log2(wide / max(narrow, 1e-12))))


def find_packed(model, ranges):
    """[(concat op index, {input position: range}, narrowest range)] of the concatenations of
    subgraph 0 that reach a model output through layout ops only and pack parts whose ranges
    differ by RATIO or more. `ranges` is {tensor index: max |x|}."""
    fu = _fu()
    ops = fu.schema_fb.BuiltinOperator
    names = {v: k for k, v in vars(ops).items() if not k.startswith("_")}
    codes = [names.get(max(oc.builtinCode, oc.deprecatedBuiltinCode)) for oc in model.operatorCodes]
    g = model.subgraphs[0]
    consumers = {}
    for i, op in enumerate(g.operators):
        for t in op.inputs:
            if t >= 0:
                consumers.setdefault(t, []).append(i)
    outputs = set(g.outputs)
    found = []
    for i, op in enumerate(g.operators):
        if codes[op.opcodeIndex] != "CONCATENATION" or len(op.inputs) < 2:
            continue
        t = op.outputs[0]
        while t not in outputs:                      # follow single layout consumers
            nxt = consumers.get(t, [])
            if len(nxt) != 1 or codes[g.operators[nxt[0]].opcodeIndex] not in _LAYOUT:
                break
            t = g.operators[nxt[0]].outputs[0]
        if t not in outputs:
            continue
        r = {pos: ranges.get(ti, 0.0) for pos, ti in enumerate(op.inputs)}
        live = [v for v in r.values() if v > 0]
        if len(live) < 2:
            continue
        narrow = min(live)
        wide = {pos: v for pos, v in r.items() if v >= RATIO * narrow}
        if wide:
            found.append((i, wide, narrow))
    return found


def _image_size(model_bytes):
    """The side of the model's one square-ish image input (1, H, W, C), else None."""
    from edge.tflite_model import TFLiteModel

    inputs = TFLiteModel(model_bytes, "model").inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        return None
    _, h, w, c = (int(d) for d in inputs[0].shape)
    return max(h, w) if c in (1, 3) else None


def normalize_packed_outputs(float_bytes, cal, say=None):
    """Rewrite a float TFLite so no packed output mixes ranges RATIO apart (module doc).

    Returns (new bytes, record): record is [] and the bytes unchanged when nothing is packed,
    else [{"output": position, "name", "axis", "parts": [[start, stop, factor], ...],
    "ranges": {...}}], where multiplying the slices [start:stop] along `axis` of the new
    model's output by `factor` gives the source's values. A rewrite whose effect is not
    such factors is dropped, and `say` (a progress callable) is told why.
    """
    import numpy as np

    fu = _fu()
    schema = fu.schema_fb
    samples = []
    for sample in cal.representative_dataset():
        samples.append(sample)
        if len(samples) >= _SAMPLES:
            break
    ranges = {}
    runs, out_idx = _run(float_bytes, samples, ranges)
    model = fu.convert_bytearray_to_object(bytearray(float_bytes))
    packed = find_packed(model, ranges)
    if not packed:
        return float_bytes, []
    size = _image_size(float_bytes)
    _Rewriter(model, schema).apply(packed, size)
    new_bytes = bytes(fu.convert_object_to_bytearray(model))
    after, _ = _run(new_bytes, samples[:4])
    record = []
    g = model.subgraphs[0]
    for pos, ti in enumerate(out_idx):
        old, new = runs[0][ti], after[0][ti]
        if np.array_equal(old, new):
            continue
        found = output_parts(old, new)
        name = g.tensors[ti].name
        name = name.decode() if isinstance(name, bytes) else str(name)
        if found is None:   # the change is not a per-slice factor: do not ship a rewrite we cannot undo
            return _dropped(float_bytes, say, name, "its change is not a factor per slice of one axis")
        axis, parts = found
        entry = [{"output": pos, "axis": axis, "parts": parts}]
        for k in range(1, len(after)):   # the same factors on every sample measured
            from edge.tensors import undo_output_rescale

            back = undo_output_rescale([after[k][ti]], entry)[0]
            atol = 1e-4 * max(1.0, float(np.abs(runs[k][ti]).max()))
            if not np.allclose(back, runs[k][ti], rtol=1e-3, atol=atol):
                return _dropped(float_bytes, say, name,
                                f"the factors measured on one sample do not hold on sample {k + 1}")
        record.append({"output": pos, "name": name,
                       "axis": axis, "parts": parts,
                       "ranges": {"narrowest": round(min(n for _, _, n in packed), 6),
                                  "widest": round(max(max(w.values()) for _, w, _ in packed), 6)}})
    return new_bytes, record


def _dropped(float_bytes, say, name, why):
    if say:
        from edge.files import printable

        say(f"packed output {printable(name)}: left as it is, {why} (its int8 parts share one scale)")
    return float_bytes, []


class _Rewriter:
    """Divides a tensor by a factor as far upstream as it can without changing any other
    tensor, the way Ultralytics' TFLite head does (`dfl(box) * norm`, `anchors * norm`):
    every tensor between there and the output then lies in about the narrow part's range.

      - MUL(v, constant c): the constant becomes c / f (a new buffer; it may be shared);
        when v = ADD(u, constant a) with no other consumer, the two swap: MUL(u, c / f) then
        ADD(., a * c / f), so the sum of grid and offset is narrow too;
      - CONCATENATION with no other consumer: each input divided by f;
      - anything else: a MUL by 1 / f inserted after it.
    """

    def __init__(self, model, schema):
        import numpy as np

        self.np, self.model, self.schema = np, model, schema
        self.g = model.subgraphs[0]
        self.codes = [max(oc.builtinCode, oc.deprecatedBuiltinCode) for oc in model.operatorCodes]
        self.inserts = {}     # id(op) -> new ops to run before it

    def apply(self, packed, size):
        for ci, wide, narrow in packed:
            concat = self.g.operators[ci]
            concat.inputs = list(concat.inputs)
            for pos, rng in sorted(wide.items()):
                self.divide(ci, pos, _factor(rng, narrow, size))
        ops = []
        for op in self.g.operators:
            ops += self.inserts.get(id(op), [])
            ops.append(op)
        self.g.operators = ops

    # -- the graph -----------------------------------------------------------------------
    def _producer(self, ti):
        for i, op in enumerate(self.g.operators):
            if ti in list(op.outputs):
                return i, op
        return None, None

    def _consumers(self, ti):
        return sum(1 for op in self.g.operators for t in op.inputs if t == ti) + (ti in list(self.g.outputs))

    def _const(self, ti):
        t = self.g.tensors[ti]
        data = self.model.buffers[t.buffer].data if 0 < t.buffer < len(self.model.buffers) else None
        if data is None or not len(data) or t.type != self.schema.TensorType.FLOAT32:
            return None
        return self.np.frombuffer(bytes(data), self.np.float32).reshape(
            [] if t.shape is None else list(t.shape))

    def _new_const(self, values, like):
        np, schema = self.np, self.schema
        values = np.asarray(values, np.float32)
        buf = schema.BufferT()
        buf.data = np.frombuffer(values.tobytes(), np.uint8)
        self.model.buffers.append(buf)
        t = schema.TensorT()
        t.name = (self.g.tensors[like].name or b"") + b"/normalized"
        t.type, t.buffer = schema.TensorType.FLOAT32, len(self.model.buffers) - 1
        t.shape = np.array(values.shape, np.int32)
        self.g.tensors.append(t)
        return len(self.g.tensors) - 1

    def _is(self, op, name):
        return self.codes[op.opcodeIndex] == getattr(self.schema.BuiltinOperator, name)

    def _split_const(self, op):
        """(variable input position, constant values) of a binary op with one constant, else None."""
        if len(op.inputs) != 2 or getattr(op.builtinOptions, "fusedActivationFunction", 0):
            return None
        a, b = (self._const(t) for t in op.inputs)
        if (a is None) == (b is None):
            return None
        return (1, a) if a is not None else (0, b)

    # -- dividing ------------------------------------------------------------------------
    def divide(self, user, pos, f):
        """Make input `pos` of op index `user` arrive divided by f."""
        ti = self.g.operators[user].inputs[pos]
        pi, op = self._producer(ti)
        if op is not None and self._consumers(ti) == 1:
            if self._is(op, "CONCATENATION") and not getattr(op.builtinOptions, "fusedActivationFunction", 0):
                op.inputs = list(op.inputs)
                for k in range(len(op.inputs)):
                    self.divide(pi, k, f)
                return
            if self._is(op, "MUL") and self._split_const(op):
                var, c = self._split_const(op)
                op.inputs = list(op.inputs)
                op.inputs[1 - var] = self._new_const(c / f, op.inputs[1 - var])
                self._swap_add(pi, op, var, c / f)
                return
        self._insert_mul(user, pos, f)

    def _swap_add(self, mi, mul, var, c):
        """MUL(ADD(u, a), c) -> ADD(MUL(u, c), a * c) when the ADD feeds only the MUL and the
        shapes allow it (c of one element, u of the ADD's shape)."""
        np = self.np
        ai, add = self._producer(mul.inputs[var])
        if add is None or not self._is(add, "ADD") or self._consumers(mul.inputs[var]) != 1 \
                or np.size(c) != 1 or not self._split_const(add):
            return
        avar, a = self._split_const(add)
        u, s = add.inputs[avar], self.g.tensors[add.inputs[avar]].shape
        mid = mul.inputs[var]
        if s is None or list(s) != list(self.g.tensors[mid].shape):
            return
        a_new = self._new_const(a * c.reshape(()), add.inputs[1 - avar])
        out = mul.outputs[0]
        mul.inputs = [u, mul.inputs[1 - var]]                 # MUL(u, c) -> mid
        mul.outputs = [mid]
        add.inputs = [mid, a_new]                             # ADD(mid, a * c) -> out
        add.outputs = [out]
        ops = self.g.operators                                # the MUL now runs first
        ops[ai], ops[mi] = ops[mi], ops[ai]

    def _insert_mul(self, user, pos, f):
        np, schema = self.np, self.schema
        if schema.BuiltinOperator.MUL not in self.codes:
            oc = schema.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = (schema.BuiltinOperator.MUL,) * 2 + (1,)
            self.model.operatorCodes.append(oc)
            self.codes.append(schema.BuiltinOperator.MUL)
        op_user = self.g.operators[user]
        src_i = op_user.inputs[pos]
        src = self.g.tensors[src_i]
        const = self._new_const(np.array([1.0 / f], np.float32), src_i)
        out = schema.TensorT()
        out.name, out.type, out.buffer = (src.name or b"") + b"/divided", src.type, 0
        out.shape = None if src.shape is None else np.array(src.shape, np.int32)
        out.shapeSignature = src.shapeSignature
        self.g.tensors.append(out)
        op = schema.OperatorT()
        op.opcodeIndex = self.codes.index(schema.BuiltinOperator.MUL)
        op.inputs, op.outputs = [src_i, const], [len(self.g.tensors) - 1]
        op.builtinOptionsType = schema.BuiltinOptions.MulOptions
        op.builtinOptions = schema.MulOptionsT()
        self.inserts.setdefault(id(op_user), []).append(op)
        op_user.inputs = list(op_user.inputs)
        op_user.inputs[pos] = len(self.g.tensors) - 1


def output_parts(old, new):
    """(axis, [[start, stop, factor], ...]) such that `new` times factor over those slices along
    axis (1 elsewhere) equals `old`, or None when no axis explains the change."""
    import numpy as np

    old, new = np.asarray(old, np.float64), np.asarray(new, np.float64)
    for axis in range(old.ndim):
        if old.shape[axis] < 2:
            continue
        o, n = np.moveaxis(old, axis, 0).reshape(old.shape[axis], -1), \
            np.moveaxis(new, axis, 0).reshape(old.shape[axis], -1)
        factors = []
        for row_o, row_n in zip(o, n):
            ok = np.abs(row_n) > 1e-6 * max(1.0, float(np.abs(n).max()))
            f = float(np.median(row_o[ok] / row_n[ok])) if ok.any() else 1.0
            factors.append(_round_factor(f))
        f = np.array(factors)[:, None]
        if not np.allclose(n * f, o, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(o).max()))):
            continue
        parts, start = [], 0
        for i in range(1, len(factors) + 1):
            if i == len(factors) or factors[i] != factors[start]:
                if factors[start] != 1.0:
                    parts.append([start, i, factors[start]])
                start = i
        if parts:
            return axis, parts
    return None


def _round_factor(f):
    """A measured factor snapped to the nearest integer or power of two when within 1e-4."""
    for exact in (round(f), 2.0 ** round(math.log2(abs(f))) if f else 0.0):
        if exact and abs(f - exact) <= 1e-4 * abs(exact):
            return float(exact)
    return float(f)


def normalize_for_int8(float_bytes, cal, options):
    """What every full-int8 route calls on its float TFLite before calibrating: the rewrite
    above unless `options.normalize_packed_outputs` is False, each rewrite said in a
    progress line. Returns (bytes, record for the sidecar's output_rescale, or None)."""
    if not options.normalize_packed_outputs:
        return float_bytes, None
    from edge.files import printable

    float_bytes, record = normalize_packed_outputs(float_bytes, cal, options.progress)
    for r in record:
        options.progress(
            f"packed output {printable(r['name'])}: parts ranging up to {r['ranges']['widest']:g} beside "
            f"parts up to {r['ranges']['narrowest']:g} would share one int8 scale; divided before "
            f"the concatenation (" + ", ".join(f"[{a}:{b}] along axis {r['axis']} / {f:g}"
                                              for a, b, f in r["parts"]) +
            "), multiplied back from the sidecar's output_rescale")
    return float_bytes, record or None
