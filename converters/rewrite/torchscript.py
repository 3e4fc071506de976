"""What the TorchScript rewrites share (torchscript_state.py, torchscript_ops.py): walking a
forward graph's nodes, branches included, and reading a module's forward as one inlined graph.

Imports: nothing at import time (torch when called)
"""


def nodes(block):
    """Every node of `block` and of the blocks inside its nodes (a prim::If's branches), in
    order; a list is taken of each block first, so a caller may destroy the node it is given."""
    for node in list(block.nodes()):
        yield node
        for b in node.blocks():
            yield from nodes(b)


def forward_graph(model):
    """A copy of `model`'s forward graph with every method call inlined (the caller must hold
    the graph while it walks its blocks)."""
    import torch

    graph = model.forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    return graph
