"""TorchScript rewrite: ops coremltools has no lowering for, replaced by their arithmetic.

Imports: edge, converters

coremltools' TorchScript frontend stops at an op it has no converter for ("PyTorch convert
function for op 'lstm_cell' not implemented"): silero-vad's decoder is an nn.LSTMCell. Each
entry of torchscript_decompositions.DECOMPOSITIONS is a TorchScript function with the op's exact schema and semantics,
written in ops every exporter takes (matmul, add, chunk, sigmoid, tanh); the rewrite freezes the
module (weights become constants), inlines the function's graph in place of each such node and
folds the branches on the optional biases. The module's forward keeps its signature, so the
frozen module itself is the rewritten copy. Validation judges the Core ML model against the
original module, not against this copy.
"""

from converters.rewrite import rewrite
from converters.rewrite.torchscript import forward_graph, nodes

OPS = ("aten::lstm_cell", "aten::gru_cell")   # the ops torchscript_decompositions.py writes out
_scripted: dict = {}


def _decomposition(kind):
    """The scripted decomposition of `kind` (torchscript_decompositions.py, scripted once)."""
    if kind not in _scripted:
        import torch

        from converters.rewrite.torchscript_decompositions import DECOMPOSITIONS, bind

        bind(torch)
        _scripted[kind] = torch.jit.script(DECOMPOSITIONS[kind])
    return _scripted[kind]


def decompose(model):
    """(frozen copy of `model` with every OPS op replaced, count)."""
    import torch

    frozen = torch.jit.freeze(model.eval())
    graph = frozen.forward.graph            # in place: the frozen module keeps this graph
    torch._C._jit_pass_inline(graph)
    count = 0
    for node in list(nodes(graph.block())):
        if node.kind() not in OPS:
            continue
        fn = _decomposition(node.kind())
        with graph.insert_point_guard(node):
            (result,) = graph.insertGraph(fn.graph, list(node.inputs()))
        outs = list(node.outputs())
        values = list(result.node().inputs()) if len(outs) > 1 else [result]
        for old, new in zip(outs, values):
            old.replaceAllUsesWith(new)
        node.destroy()
        count += 1
    torch._C._jit_pass_constant_propagation(graph)
    torch._C._jit_pass_dce(graph)
    return frozen, count


@rewrite("torchscript", "ops_as_arithmetic", needed_by=("torchscript -> coreml",))
class DecomposeOps:
    """Ops coremltools' TorchScript frontend has no lowering for, as their arithmetic. Named to
    come after explicit_state (rewrites apply in name order): on a stateful module it works on
    the stateless copy, whose shape checks explicit_state has folded for coremltools."""

    pattern = "lstm_cell/gru_cell ops"
    describe = "wrote {n} {ops} as their arithmetic (matmul, sigmoid, tanh) for coremltools"

    @staticmethod
    def matches(model, options=None):
        graph = forward_graph(model)   # held: a block outlives no graph
        return sum(n.kind() in OPS for n in nodes(graph.block()))

    @staticmethod
    def apply(model, options=None):
        graph = forward_graph(model)
        kinds = sorted({n.kind().split("::")[1] for n in nodes(graph.block()) if n.kind() in OPS})
        module, count = decompose(model)
        return module, count, {"ops": "/".join(kinds)}
