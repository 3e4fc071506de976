"""ONNX: the inputs the user fixes with `--fix NAME=VALUE` become constants (ModelProto -> ModelProto).

Each fixed graph input is replaced by an initializer holding its value (the input's dtype, its
static shape; a number or a smaller list is broadcast); then what became constant is folded
(converters/rewrite/onnx.py `fold`): an `If` with a constant condition becomes its taken
branch, shape arithmetic (Shape, Gather, Concat, Equal, ...) on static shapes becomes
constants. The user asked for it, so every conversion out of ONNX applies it; validation
feeds the original source the same value.
"""

from converters.rewrite import rewrite
from converters.rewrite.fixing import fixed_values
from converters.rewrite.onnx import ONNX2COREML, ONNX2TF, _graph_inputs, _input_shapes, fold


def _value_shape(inp, value, shapes):
    """The shape the constant takes: the routes' static shape of the input; else the value's
    own shape when it has the input's rank; else the model's dims, open ones 1."""
    import numpy as np

    dims = inp.type.tensor_type.shape.dim
    if inp.name in shapes:
        return list(shapes[inp.name])
    own = np.shape(value)
    if len(own) == len(dims):
        return list(own)
    return [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in dims]


@rewrite("onnx", "fix_inputs", needed_by=(ONNX2COREML, "onnx -> ort", ONNX2TF))
class FixInputs:
    """--fix NAME=VALUE: the input becomes a constant, and what it decides is folded."""

    pattern = "inputs fixed by --fix"   # named when --no-rewrite refuses the route
    describe = "fixed {fixed} as constants (folded {ifs} If, {nodes} constant nodes)"

    @staticmethod
    def wanted(options):
        return bool(fixed_values(options))

    @staticmethod
    def matches(model, options=None):
        wanted = fixed_values(options)
        return sum(i.name in wanted for i in _graph_inputs(model))

    @staticmethod
    def apply(model, options=None):
        from edge.ort import onnx_dtype

        wanted = fixed_values(options)
        inputs = [i for i in _graph_inputs(model) if i.name in wanted]
        if not inputs:
            return model, 0, {}
        shapes = _input_shapes(model, options)
        pinned = {}
        for i in inputs:
            shape = _value_shape(i, wanted[i.name], shapes)
            dtype = onnx_dtype(i.type.tensor_type.elem_type)
            pinned[i.name] = options.input_overrides.fixed_for(i.name, shape, dtype)
            shapes[i.name] = shape
        new, counts = fold(model, pinned, shapes)
        fixed = {i.name: wanted[i.name] for i in inputs}
        return new, len(inputs), {"fixed": ", ".join(f"{k}={v}" for k, v in fixed.items()),
                                  "ifs": counts["if"], "nodes": counts["nodes"],
                                  "fixed_arguments": fixed}


