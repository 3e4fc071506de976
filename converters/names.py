"""One name per input across every hop: the sidecar block that maps each artefact's input
tensor names to the source model's names, read and matched here (no framework, no runner).

    {"names": {"serving_default_x:0": "x", ...},    # artefact tensor name -> source name
     "matched": "name" | "position",                  # how: by name; position only as fallback
     "quantization": {"input": [0.0078125, 128]}}     # an integer input's source parameters,
                                                      # when the artefact's own has none

converters/validation/names.py makes the block for each hop and puts it in every runner;
converters (e.g. the int8 quantizer's --data) read it through `name_map`.

May import: nothing but the standard library.
"""

import re

KEY = "input_names"


def name_map(metadata):
    """{artefact tensor name: source name} from a sidecar dict; {} when it records none."""
    block = (metadata or {}).get(KEY)
    names = block.get("names") if isinstance(block, dict) else None
    if not isinstance(names, dict):
        return {}
    return {k: v for k, v in names.items() if isinstance(k, str) and isinstance(v, str)}


def input_quantization(metadata):
    """{artefact tensor name: (scale, zero_point)} recorded for integer inputs that carry no
    quantization parameters of their own (tf2onnx's plain uint8 inputs); {} when none."""
    block = (metadata or {}).get(KEY)
    q = block.get("quantization") if isinstance(block, dict) else None
    out = {}
    for k, v in (q.items() if isinstance(q, dict) else ()):
        if (isinstance(k, str) and isinstance(v, list) and len(v) == 2
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
                and v[0] > 0):
            out[k] = (float(v[0]), int(v[1]))
    return out


def _norm(name):
    """'serving_default_x:0' -> 'x'; 'input.1' -> 'input_1': the name without the decorations
    converters add (TFLite signature prefix, tensor index suffix)."""
    n = re.sub(r":\d+$", "", name)
    n = re.sub(r"^(serving_default_|StatefulPartitionedCall_?)", "", n)
    return re.sub(r"[^0-9A-Za-z]+", "_", n).strip("_").lower()


def match_names(source_names, artefact_names):
    """{'names': {artefact name: source name}, 'matched': how} pairing each artefact input with
    one source input: same name, else same name once decorations are stripped, else (the
    recorded fallback) the same position among the unmatched; None when the counts differ."""
    if len(source_names) != len(artefact_names) or not artefact_names:
        return None
    mapping, free = {}, list(source_names)
    for a in artefact_names:
        if a in free:
            mapping[a] = a
            free.remove(a)
    for a in artefact_names:
        if a in mapping:
            continue
        same = [s for s in free if _norm(s) == _norm(a)]
        if len(same) == 1:
            mapping[a] = same[0]
            free.remove(same[0])
    how = "name"
    for a in artefact_names:
        if a not in mapping:
            mapping[a] = free.pop(0)
            how = "position"
    return {"names": mapping, "matched": how}


def options_in_model_names(options, artefact):
    """`options` with --input-shapes/--val-range/--data keyed by `artefact`'s own tensor names
    (the user gives the source's): a copy when the artefact's map renames an input, else
    `options` itself. A converter reading its source's inputs by name then finds them."""
    import copy
    import dataclasses

    mapping = {k: v for k, v in name_map(artefact.metadata).items() if k != v}
    ov = options.input_overrides
    if not mapping or not ov:
        return options
    back = {v: k for k, v in mapping.items()}

    def rekey(d):
        return {back.get(k, k): v for k, v in d.items()} if d else d

    out = copy.copy(options)
    out.input_overrides = dataclasses.replace(ov, shapes=rekey(ov.shapes), ranges=rekey(ov.ranges),
                                              data=rekey(ov.data))
    return out
