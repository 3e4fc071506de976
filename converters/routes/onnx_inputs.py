"""Fixed input shapes for the routes out of ONNX (onnx2tf, onnx2coreml).

Both tools need every input dimension fixed. The shape of each input comes from the user
(`--input-shapes NAME:[...]`, a bare shape for a single-input model, or `--input-shape`),
else from the model; a dimension the model names (`dim_param`) takes the value the user's
shape gives the same name on another input (silero's `state [2, batch, 128]` follows its
`input [batch, samples]`); a free batch (dimension 0) becomes 1. Any other open dimension
is an InputError that says how to fix it.
"""

from edge.errors import InputError


def graph_inputs(model):
    """The graph inputs that are not initializers."""
    init = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init]


def model_dims(value_info):
    """[(dim_value or None, dim_param or None)] of one graph input."""
    return [(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None,
             d.dim_param if d.HasField("dim_param") and d.dim_param else None)
            for d in value_info.type.tensor_type.shape.dim]


def user_shapes(options, inputs, name):
    """{input name: [dims]} of the shapes the user gave, checked against the model's inputs."""
    ov = options.input_overrides
    shapes = dict(ov.shapes) if ov is not None else {}
    if options.input_shape and not shapes:
        shapes[None] = list(options.input_shape)
    names = [i.name for i in inputs]
    if None in shapes:
        if len(inputs) != 1:
            raise InputError(f"a bare input shape fixes one input; {name} has {len(inputs)} "
                             f"({', '.join(names)})", "name each one: --input-shapes NAME:[d,...] ...")
        shapes[names[0]] = shapes.pop(None)
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise InputError(f"--input-shapes names {', '.join(unknown)}, which {name} does not have",
                         f"its inputs: {', '.join(names)}")
    return {k: [int(d) for d in v] for k, v in shapes.items()}


def static_shapes(model, options, name):
    """[(input name, [dims], source)] with every dimension fixed; source is 'model' when the
    model fixed them all, else 'user' or 'batch' (a free batch set to 1)."""
    inputs = graph_inputs(model)
    if not inputs:
        raise InputError(f"{name} has no inputs")
    given = user_shapes(options, inputs, name)
    linked = {}
    for i in inputs:
        if i.name in given:
            dims = model_dims(i)
            if len(given[i.name]) != len(dims):
                raise InputError(f"the shape {given[i.name]} given for '{i.name}' has {len(given[i.name])} "
                                 f"dimensions, {name}'s input has {len(dims)}")
            for (_, param), v in zip(dims, given[i.name]):
                if param:
                    linked.setdefault(param, v)
    out = []
    for i in inputs:
        if i.name in given:
            out.append((i.name, given[i.name], "user"))
            continue
        shape, source = [], "model"
        for k, (value, param) in enumerate(model_dims(i)):
            if value is None and param in linked:
                value, source = linked[param], "user"
            if value is None and k == 0:
                value, source = 1, "batch"
            if value is None:
                raise InputError(f"{name}'s input '{i.name}' has an open dimension {k} ({param or '?'})",
                                 f"fix it with --input-shapes {i.name}:[d0,d1,...] (TFLite, Core ML and the "
                                 "Edge TPU need static shapes)")
            shape.append(int(value))
        out.append((i.name, shape, source))
    return out


def fix_shapes(model, shapes):
    """Write `shapes` ([(name, dims, _)]) into `model`'s graph inputs (in place)."""
    by_name = {n: dims for n, dims, _ in shapes}
    for i in graph_inputs(model):
        for d, v in zip(i.type.tensor_type.shape.dim, by_name[i.name]):
            d.Clear()
            d.dim_value = int(v)
    return model
