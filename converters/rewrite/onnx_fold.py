"""ONNX: a shape computed from constants by nodes (not stored as a constant) is folded, for
onnx2tf.

PyTorch's exporter writes some shape arguments as arithmetic on constants instead of a
constant: silero-vad's sequence model computes the pads of its STFT's reflection Pad with
ConstantOfShape, Concat, Reshape, Slice, Transpose and Cast. Nothing after that Pad then has
a static shape, and onnx2tf stops at the STFT's magnitude (`Add` of the squared real and
imaginary parts: "UnboundLocalError: cannot access local variable 'dummy_tensor'" in its
broadcast check, the two halves having been given shapes that no transposition reconciles),
and its LSTM cannot be unrolled (its sequence length is unknown). With the static input
shapes onnx2tf is given anyway, each such computation becomes the constant it always is
(`fold` in rewrite/onnx.py, with nothing pinned), and the shapes after it are static.

The pattern counted: an input that decides a shape (Pad's pads, Reshape's shape, Expand's
and ConstantOfShape's shape, Tile's repeats, Slice's starts/ends/axes/steps, Resize's scales
and sizes) written by a node whose inputs are all constants, transitively, in a model with an
LSTM (which onnx2tf takes only unrolled, and unroll_lstm only with a static length).
Elsewhere onnx2tf takes such shapes itself (silero_vad_half's same computed pads), so the
rewrite is not counted there, and --no-rewrite refuses nothing it converts.
"""

from converters.rewrite import rewrite
from converters.rewrite.onnx import _NOT_FOLDED, ONNX2TF, _input_shapes, _subgraphs, constants, fold

# op type -> the positions of its inputs that decide its output's shape
SHAPE_INPUTS = {"Pad": (1,), "Reshape": (1,), "Expand": (1,), "ConstantOfShape": (0,), "Tile": (1,),
                "Slice": (1, 2, 3, 4), "Resize": (2, 3)}


def computed_shape_inputs(model):
    """How many shape-deciding inputs (SHAPE_INPUTS) of the main graph are computed by nodes
    from constants alone: what `fold` turns into constants with nothing pinned."""
    g = model.graph
    consts = {t.name for t in g.initializer}
    computed = set()       # constants made by a node other than Constant
    for n in g.node:
        if n.op_type == "Constant":
            consts.update(n.output)
        elif n.domain in ("", "ai.onnx") and n.op_type not in _NOT_FOLDED and not any(_subgraphs(n)) \
                and any(n.input) and all(i in consts for i in n.input if i):
            consts.update(n.output)
            computed.update(n.output)
    return sum(1 for n in g.node for k in SHAPE_INPUTS.get(n.op_type, ())
               if k < len(n.input) and n.input[k] in computed)


@rewrite("onnx", "fold_computed_shapes", needed_by=(ONNX2TF,))
class FoldComputedShapes:
    """A shape computed from constants (silero-vad sequence's STFT pads) is folded into a
    constant, with the static input shapes onnx2tf is given."""

    describe = "folded {n} shape arguments computed from constants ({nodes} constant nodes)"
    pattern = "shape arguments computed from constants"

    @staticmethod
    def matches(model, options=None):
        has_lstm = any(n.op_type == "LSTM" for n in model.graph.node)
        return computed_shape_inputs(model) if has_lstm else 0

    @staticmethod
    def apply(model, options=None):
        n = computed_shape_inputs(model)
        if not n:
            return model, 0, {}
        new, counts = fold(model, {}, _input_shapes(model, options) if options is not None else {})
        return new, n - computed_shape_inputs(new), {"nodes": counts["nodes"]}


def _lstm_y_squeezes(model, shapes=None):
    """{index: node} of the Squeeze nodes that read the output Y of an LSTM that unroll_lstm
    unrolls (static, at most 64 steps: `_plain_lstm`); an LSTM onnx2tf keeps as it is keeps its
    Squeeze. `shapes`: the static shapes (None: inferred, when some Squeeze reads an LSTM)."""
    from converters.rewrite.onnx import _plain_lstm, _static_shapes

    lstms = [n for n in model.graph.node if n.op_type == "LSTM" and n.output and n.output[0]]
    squeezes = {i: n for i, n in enumerate(model.graph.node)
                if n.op_type == "Squeeze" and n.input[0] in {x.output[0] for x in lstms}}
    if not squeezes:
        return {}
    shapes = _static_shapes(model) if shapes is None else shapes
    ys = {n.output[0] for n in lstms if _plain_lstm(n, shapes) is not None}
    return {i: n for i, n in squeezes.items() if n.input[0] in ys}


def _squeezed(model, node, shapes):
    """The static shape a Squeeze gives (its input's, less the squeezed axes), or None."""
    import numpy as np
    from onnx import helper

    dims = shapes.get(node.input[0])
    if dims is None:
        return None
    axes = [helper.get_attribute_value(a) for a in node.attribute if a.name == "axes"]
    axes = list(axes[0]) if axes else None
    if len(node.input) > 1 and node.input[1]:
        found = constants(model, {node.input[1]}).get(node.input[1])
        if found is None:
            return None
        axes = [int(a) for a in np.asarray(found).reshape(-1)]
    if axes is None:
        return [d for d in dims if d != 1]
    axes = {a % len(dims) for a in axes}
    return [d for i, d in enumerate(dims) if i not in axes]


@rewrite("onnx", "lstm_output_squeeze", needed_by=(ONNX2TF,))
class LSTMOutputSqueeze:
    """The Squeeze of an LSTM's output Y (its num_directions axis) becomes a Reshape to its
    static shape. It runs before unroll_lstm (rewrites apply in the order of their names):
    unrolled, Y is a Concat [steps, 1, batch, hidden], which onnx2tf takes for an NCHW image
    and squeezes on the wrong axis ("Can not squeeze dim[3], expected a dimension of 1, got
    128", silero-vad's sequence model). Only the Squeeze of an LSTM unroll_lstm unrolls (static,
    at most 64 steps) is counted and rewritten: onnx2tf's own LSTM keeps its Squeeze."""

    describe = "wrote {n} Squeeze of an LSTM output as a Reshape to its static shape"
    pattern = "Squeeze of an LSTM output"

    @staticmethod
    def matches(model, options=None):
        return len(_lstm_y_squeezes(model))

    @staticmethod
    def apply(model, options=None):
        import numpy as np
        import onnx
        from onnx import helper, numpy_helper

        from converters.rewrite.onnx import _static_shapes

        shapes = _static_shapes(model)
        targets = {i: _squeezed(model, n, shapes) for i, n in _lstm_y_squeezes(model, shapes).items()}
        targets = {i: v for i, v in targets.items() if v is not None}
        if not targets:
            return model, 0, {}
        m = onnx.ModelProto()
        m.CopyFrom(model)
        taken = {t.name for t in m.graph.initializer} | {o for n in m.graph.node for o in n.output}
        nodes, count = [], 0
        for i, n in enumerate(m.graph.node):
            if i not in targets:
                nodes.append(n)
                continue
            name = n.output[0] + "/static_shape"
            while name in taken:
                name += "_"
            taken.add(name)
            m.graph.initializer.append(numpy_helper.from_array(np.array(targets[i], np.int64), name))
            nodes.append(helper.make_node("Reshape", [n.input[0], name], list(n.output), name=n.name))
            count += 1
        del m.graph.node[:]
        m.graph.node.extend(nodes)
        return m, count, {}
