"""Edits of a TFLite model held as TensorFlow's flatbuffer object tree (flatbuffer_utils), shared
by the quantizer (quantize/) and the graph rewrites (rewrite/)."""


def drop_unused_opcodes(model):
    """Remove operator codes no op uses (in place), renumbering the ops' opcode indices (a
    stale entry, e.g. a DEQUANTIZE v2 left alone, fails TFLite's calibrator)."""
    used = sorted({op.opcodeIndex for g in model.subgraphs for op in g.operators})
    remap = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[i] for i in used]
    for g in model.subgraphs:
        for op in g.operators:
            op.opcodeIndex = remap[op.opcodeIndex]


def state_name(var):
    """A resource variable's explicit state input: `stream_10/states` -> `state_stream_10_states`
    (its output adds `_out`); shared by the rewrite and the stepped validation."""
    import re

    return "state_" + (re.sub(r"[^0-9A-Za-z_]+", "_", str(var)).strip("_") or "var")
