"""TFLite: constant folding before TFLite's quantizer, with the inputs' open batch fixed to 1.

TFLite's converter keeps the arithmetic a model does on the shape of a tensor with an open
dimension: tf.signal.frame/stft in BirdNET's front end reads its input's [-1, 144000] shape
(SHAPE) and computes the number of frames with FLOOR_DIV, MUL, PACK, RANGE, GATHER...,
ops TFLite's quantizer has no int8 kernel for ("no int8 kernel for op FLOOR_DIV"). Once the
input's shape is fixed these are constants. The quantizer route calibrates and validates on
samples of batch 1 and fixes every open input dimension to the samples' shape
(`quantize.tflite_int8.freeze_open_shapes`); this rewrite does the same for an open first
dimension (batch 1), one general mechanism for every such op:

- a tensor is constant when it has a buffer, or is computed by an op all of whose inputs are
  constant, or is the SHAPE of a tensor whose shape is known (an input whose only open
  dimension was the batch; the output of an op whose inputs have known shapes and whose
  integer inputs, which set shapes, are constant; not WHERE, UNIQUE, NON_MAX_SUPPRESSION...,
  whose output shape depends on the values), to a fixed point;
- the model runs once in TFLite's interpreter (built-in kernels, every tensor kept, zeros in
  the inputs, which no constant depends on): each constant an op computed is read from it,
  whatever the op, and becomes a constant buffer; the ops computing constants are removed;
- every tensor then gets the static shape it had in that run (as `freeze_open_shapes` gives).

Not folded: ops with state or randomness, control flow, custom ops, DEQUANTIZE (float16
weights, which the route folds itself) and DENSIFY (its own rewrite), an output of the model.
With an input open in another dimension than the first, nothing depending on its shape is
folded. A model TFLite's interpreter cannot run (a custom op) is left as it is. The artefact is validated against the original, unrewritten model.
"""

from converters.rewrite import rewrite
from converters.rewrite.tflite import QUANTIZER, _codes, _schema, builtin_names
from converters.tflite_objects import drop_unused_opcodes

# ops never folded: state, randomness, control flow, custom code, and what others handle
_KEPT = frozenset((
    "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE", "IF", "WHILE", "CALL", "CUSTOM",
    "RANDOM_UNIFORM", "RANDOM_STANDARD_NORMAL", "MULTINOMIAL", "DEQUANTIZE", "DENSIFY",
    "HASHTABLE", "HASHTABLE_FIND", "HASHTABLE_IMPORT", "HASHTABLE_SIZE"))
# ops whose output's shape depends on their input's values, not only on its shape
_VALUE_SHAPED = frozenset(("WHERE", "UNIQUE", "NON_MAX_SUPPRESSION_V4", "NON_MAX_SUPPRESSION_V5"))
_INTEGER = (2, 4, 6, 9, 3)       # INT32, INT64, BOOL, INT8, UINT8: a shape, an axis, an index...


def _has_data(model, t):
    return bool(t.buffer) and model.buffers[t.buffer].data is not None and len(model.buffers[t.buffer].data) > 0


def _fixed_inputs(g):
    """{input tensor: its shape with an open first dimension as 1}, for the inputs whose only
    open dimension (if any) is the first."""
    out = {}
    for i in g.inputs:
        t = g.tensors[int(i)]
        sig = [int(d) for d in (t.shapeSignature if t.shapeSignature is not None else t.shape)]
        if all(d >= 0 for d in sig[1:]):
            out[int(i)] = [1 if k == 0 and d < 0 else d for k, d in enumerate(sig)]
    return out


def plan(model, names):
    """(indices of the main graph's ops to fold, set of the constant tensors they compute)."""
    g, codes = model.subgraphs[0], _codes(model)
    made = {int(t) for op in g.operators for t in op.outputs} | {int(t) for t in g.inputs}
    # a constant: data in a buffer, or no element at all (a [0] shape: an empty list of axes)
    const = {k for k, t in enumerate(g.tensors) if _has_data(model, t) or (
        k not in made and t.shape is not None and 0 in [int(d) for d in t.shape])}
    known = set(const) | set(_fixed_inputs(g))
    outputs = {int(t) for t in g.outputs}
    folded = []
    changed = True
    while changed:
        changed = False
        for i, op in enumerate(g.operators):
            name = names.get(codes[op.opcodeIndex], "?")
            outs = [int(t) for t in op.outputs]
            if all(t in const for t in outs):
                continue
            ins = [int(t) for t in op.inputs if t >= 0]
            foldable = name not in _KEPT and not (set(outs) & outputs) and (
                all(t in const for t in ins) or (name == "SHAPE" and ins[0] in known))
            if foldable:
                const.update(outs)
                known.update(outs)
                folded.append(i)
                changed = True
            elif name not in _KEPT and name not in _VALUE_SHAPED and not set(outs) <= known and all(
                    t in known and (t in const or g.tensors[t].type not in _INTEGER) for t in ins):
                known.update(outs)
                changed = True
    return sorted(folded), {int(t) for i in folded for t in g.operators[i].outputs}


def _run(model_bytes, shapes):
    """TFLite's interpreter after one run on zeros, the inputs resized to `shapes`, every tensor
    kept (built-in kernels only)."""
    import warnings

    import numpy as np
    from tensorflow.lite.python.interpreter import Interpreter, OpResolverType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interp = Interpreter(model_content=bytes(model_bytes), experimental_preserve_all_tensors=True,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    for d in interp.get_input_details():
        interp.resize_tensor_input(d["index"], shapes.get(d["index"], list(d["shape"])))
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    interp.invoke()
    return interp


def fold_constants(model_bytes):
    """(new model bytes, number of ops folded into constants)."""
    import numpy as np

    fu = _schema()
    model = fu.convert_bytearray_to_object(bytearray(model_bytes))
    folded, values = plan(model, builtin_names(fu.schema_fb))
    if not folded:
        return model_bytes, 0
    g = model.subgraphs[0]
    fixed = _fixed_inputs(g)
    try:
        interp = _run(model_bytes, fixed)
    except Exception:       # the interpreter cannot run it (a custom op): nothing is folded, and
        return model_bytes, 0   # the quantizer route says what it refuses, in its own words
    read = {int(t) for i, op in enumerate(g.operators) if i not in set(folded) for t in op.inputs}
    for t in values & read:       # only the constants a kept op reads need a buffer
        value = np.ascontiguousarray(interp.get_tensor(t))
        buf = fu.schema_fb.BufferT()
        buf.data = np.frombuffer(value.tobytes(), np.uint8)
        model.buffers.append(buf)
        g.tensors[t].buffer = len(model.buffers) - 1
    drop = set(folded)
    g.operators = [op for i, op in enumerate(g.operators) if i not in drop]
    if len(model.subgraphs) == 1 and len(fixed) == len(g.inputs):   # every shape as in the run
        for d in interp.get_tensor_details():
            if d["index"] < len(g.tensors):
                g.tensors[d["index"]].shape = np.asarray(d["shape"], np.int32)
                g.tensors[d["index"]].shapeSignature = None
    drop_unused_opcodes(model)
    return bytes(fu.convert_object_to_bytearray(model)), len(drop)


@rewrite("tflite", "constant_fold", needed_by=(QUANTIZER,))
class ConstantFold:
    """Ops computing constants (arithmetic on fixed shapes: SHAPE, FLOOR_DIV, RANGE...) become
    constant buffers, the inputs' open batch fixed to 1, as the quantizer route calibrates."""

    describe = "folded {n} op(s) computing constants (the input's shape fixed, batch 1) for TFLite's quantizer"
    pattern = "ops computing constants"

    @staticmethod
    def matches(model_bytes, options=None):
        fu = _schema()
        model = fu.convert_bytearray_to_object(bytearray(model_bytes))
        return len(plan(model, builtin_names(fu.schema_fb))[0])

    @staticmethod
    def apply(model_bytes, options=None):
        return fold_constants(model_bytes)
