"""The user's input names and shapes, carried onto a model whose inputs are named or laid out
differently (numpy-only: `bench` runs on a Pi).

One set of flags (`--input-shapes images:[1,3,320,320]`, `--val-range`, `--data`) serves every
model in a list: the source's ONNX calls its input `images`, the TFLite made from it
`serving_default_images:0` (or `images` in NHWC, [1,320,320,3]). `for_model` gives the
overrides in this model's names, and a note for every mapping it made, so nothing is matched
silently:

  1. a name the model has is used as is;
  2. a name recorded in the model's sidecar as the source name of one of its inputs
     (`input_names.names` {model name: source name}, as `convert` records it);
  3. the same name once TensorFlow's mangling is dropped (`serving_default_x:0` ~ `x`);
  4. by position, when the user named as many inputs as the model has and no name matched.

A 4-D shape given in NCHW for an input the model takes in NHWC (its fixed dimensions fit the
transposed shape, not the given one) is transposed, with a note.
"""

import dataclasses
import re


def bare_name(name):
    """`serving_default_images:0` -> `images`."""
    name = re.sub(r":\d+$", "", str(name))
    for prefix in ("serving_default_",):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def _recorded_names(sidecar):
    """{model input name: source input name} recorded in a sidecar, if any."""
    out = {}
    if not isinstance(sidecar, dict):
        return out
    names = sidecar.get("input_names")   # {"names": {artefact name: source name}, "matched": ...}
    if isinstance(names, dict) and isinstance(names.get("names"), dict):
        names = names["names"]
    if isinstance(names, dict):
        out.update({str(k): str(v) for k, v in names.items() if isinstance(k, str) and isinstance(v, str)})
    for entry in sidecar.get("inputs") or []:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("source_name"), str):
            out[entry["name"]] = entry["source_name"]
    return out


def name_map(user_names, model_names, sidecar=None):
    """({user name: model name}, [notes]) for the user's names that are not the model's."""
    model_names = list(model_names)
    recorded = _recorded_names(sidecar)
    mapping, notes, left = {}, [], []
    for u in user_names:
        if u is None or u in model_names:
            continue
        hits = [m for m, src in recorded.items() if src == u and m in model_names]
        how = "recorded in its sidecar"
        if len(hits) != 1:
            hits = [m for m in model_names if bare_name(m) == bare_name(u)]
            how = "same name without TensorFlow's prefix"
        if len(hits) == 1 and hits[0] not in mapping.values() and hits[0] not in user_names:
            mapping[u] = hits[0]
            notes.append(f"input '{u}' is this model's '{hits[0]}' ({how})")
        else:
            left.append(u)
    free = [m for m in model_names if m not in mapping.values() and m not in user_names]
    named = [u for u in user_names if u is not None]
    if left and len(named) == len(model_names) and len(left) == len(free):
        order = {u: i for i, u in enumerate(named)}
        for u in sorted(left, key=order.get):
            m = model_names[order[u]]
            if m not in free:
                break
            mapping[u] = m
            notes.append(f"input '{u}' is this model's '{m}' (by position: no name matched)")
    return mapping, notes


def _fits(shape, model_shape):
    return len(shape) == len(model_shape) and all(m is None or int(m) == int(s)
                                                  for s, m in zip(shape, model_shape))


def layout_fix(name, shape, model_shape):
    """(shape, note or None): an NCHW shape given for an NHWC input is transposed."""
    if shape is None or model_shape is None or len(shape) != 4 or len(model_shape) != 4:
        return shape, None
    if _fits(shape, model_shape):
        return shape, None
    nhwc = [shape[0], shape[2], shape[3], shape[1]]
    if _fits(nhwc, model_shape) and model_shape[3] is not None:
        return nhwc, (f"input '{name}': the shape {list(shape)} is NCHW, this model takes NHWC: "
                      f"ran {nhwc}")
    return shape, None


def for_model(overrides, inputs, sidecar=None):
    """(overrides in this model's input names and layouts, [notes]).

    `inputs`: [(name, shape with None for open dims, ...)] of the model."""
    if not overrides:
        return overrides, []
    model_shapes = {i[0]: [d if isinstance(d, int) else None for d in i[1]] for i in inputs}
    user = set(overrides.shapes) | set(overrides.ranges) | set(overrides.data or {})
    mapping, notes = name_map(sorted((u for u in user if u is not None), key=_order(overrides)),
                              list(model_shapes), sidecar)
    shapes = {}
    for u, shape in overrides.shapes.items():
        m = mapping.get(u, u)
        if m in model_shapes:
            shape, note = layout_fix(m, shape, model_shapes[m])
            if note:
                notes.append(note)
        shapes[m] = shape
    if len(model_shapes) == 1 and None in shapes:
        only = next(iter(model_shapes))
        fixed, note = layout_fix(only, shapes[None], model_shapes[only])
        shapes[None] = fixed
        if note:
            notes.append(note)
    if not mapping and shapes == overrides.shapes:
        return overrides, notes
    return dataclasses.replace(
        overrides, shapes=shapes, ranges={mapping.get(k, k): v for k, v in overrides.ranges.items()},
        data=None if overrides.data is None else {mapping.get(k, k): v for k, v in overrides.data.items()}), notes


def _order(overrides):
    """The user's names in the order given (shapes first, then ranges, then data)."""
    seen = list(overrides.shapes) + list(overrides.ranges) + list(overrides.data or {})
    first = {}
    for i, n in enumerate(seen):
        first.setdefault(n, i)
    return lambda n: first.get(n, len(first))
