"""Numpy kernels for MIL operations, one per op type, registered by name (as tf2onnx's handlers).

A kernel is `fn(a, op)`: `a` maps each input parameter of the op to its value (a numpy array,
a Python scalar or string, a list for tuple inputs such as concat's `values`, or None when an
optional input is absent); `op` is the executor's OpInfo (type, name, static output shapes).
It returns the op's output, or a tuple when the op has several.

Semantics follow the MIL op definitions of coremltools (coremltools/converters/mil/mil/ops/
defs): element-wise binary ops and reductions reuse the numpy operator that the MIL op class
itself uses for constant folding (`get_operator`), slicing reuses coremltools' own slice solver.
Values arrive as float32 (float16 values already rounded by the executor) or integers; the
executor rounds each output back to the op's declared type.
"""

import math

import numpy as np

KERNELS = {}

# Ops whose every output value is one of their inputs' values (or a constant argument of the
# same type): on float16 inputs their results are float16 values already, so the executor
# skips rounding them.
VALUE_PRESERVING = frozenset((
    "relu", "relu6", "clip", "threshold", "pad", "max_pool", "reshape", "transpose", "concat",
    "slice_by_index", "slice_by_size", "squeeze", "expand_dims", "gather", "gather_along_axis",
    "split", "stack", "tile", "identity", "flatten2d", "reduce_max", "reduce_min", "select",
    "maximum", "minimum", "upsample_nearest_neighbor"))


def kernel(*names):
    def register(fn):
        for n in names:
            KERNELS[n] = fn
        return fn
    return register


def _f(x):
    return np.asarray(x, dtype=np.float32)


def _ints(v):
    return [int(i) for i in np.asarray(v).reshape(-1)]


def _static(shape):
    return shape is not None and all(isinstance(d, (int, np.integer)) for d in shape)


# -- element-wise binary ops: MIL's own numpy operators --------------------------------------
def _binary_operator(name):
    from coremltools.converters.mil.mil.ops.defs import iOS15

    return getattr(iOS15, name).get_operator(None)


_BINARY = ("add", "sub", "mul", "real_div", "floor_div", "mod", "pow", "maximum", "minimum",
           "equal", "not_equal", "greater", "greater_equal", "less", "less_equal",
           "logical_and", "logical_or", "logical_xor")


def _make_binary(name):
    fn = None

    def run(a, op):
        nonlocal fn
        if fn is None:
            fn = _binary_operator(name)
        x, y = a["x"], a["y"]
        if name == "real_div":
            return np.true_divide(_f(x), _f(y))
        if name == "floor_div" and np.issubdtype(np.asarray(x).dtype, np.floating):
            return np.floor_divide(x, y)
        return fn(np.asarray(x), np.asarray(y))
    return run


for _n in _BINARY:
    KERNELS[_n] = _make_binary(_n)


# -- reductions: MIL's numpy operators -------------------------------------------------------
def _reduce(np_fn):
    def run(a, op):
        axes = a.get("axes")
        axes = None if axes is None else tuple(_ints(axes))
        keep = bool(a.get("keep_dims") or False)
        return np_fn(a["x"], axis=axes, keepdims=keep)
    return run


for _n, _fn in {"reduce_mean": np.mean, "reduce_sum": np.sum, "reduce_max": np.max,
                "reduce_min": np.min, "reduce_prod": np.prod}.items():
    KERNELS[_n] = _reduce(_fn)
KERNELS["reduce_l1_norm"] = _reduce(lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis,
                                                                     keepdims=keepdims))
KERNELS["reduce_l2_norm"] = _reduce(lambda x, axis, keepdims: np.sqrt(np.sum(
    np.square(x), axis=axis, keepdims=keepdims)))
KERNELS["reduce_sum_square"] = _reduce(lambda x, axis, keepdims: np.sum(np.square(x), axis=axis,
                                                                        keepdims=keepdims))
KERNELS["reduce_log_sum"] = _reduce(lambda x, axis, keepdims: np.log(np.sum(x, axis=axis,
                                                                            keepdims=keepdims)))
KERNELS["reduce_log_sum_exp"] = _reduce(lambda x, axis, keepdims: _logsumexp(x, axis, keepdims))


def _logsumexp(x, axis, keepdims):
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


@kernel("reduce_argmax", "reduce_argmin")
def reduce_arg(a, op):
    fn = np.argmax if op.type == "reduce_argmax" else np.argmin
    axis = int(a.get("axis") if a.get("axis") is not None else -1)
    out = fn(a["x"], axis=axis)
    if a.get("keep_dims"):
        out = np.expand_dims(out, axis)
    return out.astype(np.int32)


# -- element-wise unary ops and activations --------------------------------------------------
def _unary(fn):
    def run(a, op):
        return fn(_f(a["x"]))
    return run


def _erf(x):
    try:
        from scipy.special import erf
    except ImportError:
        return np.vectorize(math.erf, otypes=[np.float64])(x).astype(np.float32)
    return erf(x).astype(np.float32)


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


for _n, _fn in {
    "abs": np.abs, "ceil": np.ceil, "floor": np.floor, "round": np.round, "sign": np.sign,
    "exp": np.exp, "exp2": np.exp2, "sqrt": np.sqrt, "square": np.square, "sin": np.sin,
    "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
    "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "atanh": np.arctanh, "erf": _erf,
    "relu": lambda x: np.maximum(x, 0), "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": _sigmoid, "silu": lambda x: x * _sigmoid(x),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "softplus": lambda x: np.logaddexp(0, x).astype(np.float32),
}.items():
    KERNELS[_n] = _unary(_fn)


@kernel("logical_not")
def logical_not(a, op):
    return np.logical_not(a["x"])


@kernel("log")
def log(a, op):
    return np.log(_f(a["x"]) + np.float32(a.get("epsilon") or 0.0))


@kernel("rsqrt")
def rsqrt(a, op):
    return 1.0 / np.sqrt(_f(a["x"]) + np.float32(a.get("epsilon") or 1e-12))


@kernel("inverse")
def inverse(a, op):
    return 1.0 / (_f(a["x"]) + np.float32(a.get("epsilon") or 1e-4))


@kernel("clip")
def clip(a, op):
    return np.minimum(np.maximum(_f(a["x"]), a["alpha"]), a["beta"])


@kernel("threshold")
def threshold(a, op):
    return np.maximum(_f(a["x"]), a["alpha"])


@kernel("leaky_relu")
def leaky_relu(a, op):
    x = _f(a["x"])
    return np.where(x >= 0, x, x * np.float32(a.get("alpha", 0.01)))


@kernel("elu")
def elu(a, op):
    x = _f(a["x"])
    return np.where(x > 0, x, np.float32(a.get("alpha", 1.0)) * (np.exp(np.minimum(x, 0)) - 1))


@kernel("prelu")
def prelu(a, op):
    x = _f(a["x"])
    alpha = _f(a["alpha"]).reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.where(x >= 0, x, x * alpha)


@kernel("sigmoid_hard")
def sigmoid_hard(a, op):
    return np.clip(np.float32(a.get("alpha", 0.2)) * _f(a["x"]) + np.float32(a.get("beta", 0.5)),
                   0, 1)


@kernel("scaled_tanh")
def scaled_tanh(a, op):
    return np.float32(a.get("alpha", 1.0)) * np.tanh(np.float32(a.get("beta", 1.0)) * _f(a["x"]))


@kernel("linear_activation")
def linear_activation(a, op):
    return np.float32(a["alpha"]) * _f(a["x"]) + np.float32(a.get("beta") or 0.0)


@kernel("thresholded_relu")
def thresholded_relu(a, op):
    x = _f(a["x"])
    return np.where(x > a.get("alpha", 1.0), x, 0).astype(np.float32)


@kernel("clamped_relu")
def clamped_relu(a, op):
    x = _f(a["x"])
    alpha, beta = np.float32(a.get("alpha", 0.0)), np.float32(a.get("beta", 6.0))
    return np.minimum(np.where(x >= 0, x, alpha * x), beta)


@kernel("gelu")
def gelu(a, op):
    x = _f(a["x"])
    mode = a.get("mode") or "EXACT"
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    return 0.5 * x * (1 + _erf(x / np.sqrt(2)))


@kernel("softmax")
def softmax(a, op):
    x = _f(a["x"])
    axis = int(a.get("axis", -1) if a.get("axis") is not None else -1)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


@kernel("cast")
def cast(a, op):
    # the executor rounds to the declared output type (fp16, int32, ...); a float -> int cast
    # truncates toward zero as numpy's astype does
    x = np.asarray(a["x"])
    dtype = a.get("dtype")
    if dtype and dtype.startswith(("int", "uint")) and np.issubdtype(x.dtype, np.floating):
        return np.trunc(x)
    return x


@kernel("identity")
def identity(a, op):
    return a["x"]


@kernel("select")
def select(a, op):
    return np.where(np.asarray(a["cond"]).astype(bool), a["a"], a["b"])


# -- linear algebra --------------------------------------------------------------------------
@kernel("linear")
def linear(a, op):
    out = np.matmul(_f(a["x"]), _f(a["weight"]).T)
    if a.get("bias") is not None:
        out = out + _f(a["bias"])
    return out


@kernel("matmul")
def matmul(a, op):
    x, y = _f(a["x"]), _f(a["y"])
    if a.get("transpose_x") and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if a.get("transpose_y") and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@kernel("einsum")
def einsum(a, op):
    return np.einsum(a["equation"], *[_f(v) for v in a["values"]])


# -- convolution and pooling (NC + spatial, as MIL) ------------------------------------------
def _pads(pad_type, pad, spatial, kernel_sizes, strides, dilations):
    """[(begin, end)] per spatial dim, MIL's pad_type semantics."""
    n = len(spatial)
    if pad_type == "custom":
        p = _ints(pad) if pad is not None else [0] * 2 * n
        return [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type in ("same", "same_lower"):
        out = []
        for size, k, s, d in zip(spatial, kernel_sizes, strides, dilations):
            eff = (k - 1) * d + 1
            total = max((-(-size // s) - 1) * s + eff - size, 0)
            small, big = total // 2, total - total // 2
            out.append((small, big) if pad_type == "same" else (big, small))
        return out
    raise NotImplementedError(f"pad_type {pad_type}")


def _windows(x, kernel_sizes, strides, dilations, out_spatial):
    """Yield (kernel index tuple, strided view) of x (N, C, *spatial), one per kernel offset."""
    for idx in np.ndindex(*kernel_sizes):
        sl = [slice(None), slice(None)]
        for _i, (k, s, d, o) in enumerate(zip(idx, strides, dilations, out_spatial)):
            start = k * d
            sl.append(slice(start, start + s * (o - 1) + 1, s))
        yield idx, x[tuple(sl)]


def _conv_params(a, x, w_spatial):
    n = x.ndim - 2
    strides = _ints(a["strides"]) if a.get("strides") is not None else [1] * n
    dil = _ints(a["dilations"]) if a.get("dilations") is not None else [1] * n
    pads = _pads(a.get("pad_type") or "valid", a.get("pad"), x.shape[2:], w_spatial, strides, dil)
    return strides, dil, pads


@kernel("conv")
def conv(a, op):
    x, w = _f(a["x"]), _f(a["weight"])
    groups = int(a.get("groups") or 1)
    ks = list(w.shape[2:])
    strides, dil, pads = _conv_params(a, x, ks)
    if any(p for pair in pads for p in pair):
        x = np.pad(x, [(0, 0), (0, 0)] + pads)
    out_sp = [(x.shape[2 + i] - ((ks[i] - 1) * dil[i] + 1)) // strides[i] + 1 for i in range(len(ks))]
    n, c = x.shape[:2]
    co = w.shape[0]
    if groups == 1:
        if all(k == 1 for k in ks):
            xs = x[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)]
            out = np.matmul(w.reshape(co, c), xs.reshape(n, c, -1))
        else:
            cols = np.empty((n, c) + tuple(ks) + (int(np.prod(out_sp)),), np.float32)
            for idx, view in _windows(x, ks, strides, dil, out_sp):
                cols[(slice(None), slice(None)) + idx] = view.reshape(n, c, -1)
            out = np.matmul(w.reshape(co, -1), cols.reshape(n, c * int(np.prod(ks)), -1))
        out = out.reshape((n, co) + tuple(out_sp))
    elif groups == c and co % c == 0:
        # depthwise (channel multiplier co // c): accumulate the kernel offsets
        mult = co // c
        xr = np.repeat(x, mult, axis=1) if mult > 1 else x
        out = np.zeros((n, co) + tuple(out_sp), np.float32)
        tmp = np.empty_like(out)
        bshape = (1, co) + (1,) * len(ks)
        for idx, view in _windows(xr, ks, strides, dil, out_sp):
            np.multiply(view, w[(slice(None), 0) + idx].reshape(bshape), out=tmp)
            out += tmp
    else:
        cg, og = c // groups, co // groups
        parts = []
        for g in range(groups):
            sub = dict(a, x=x[:, g * cg:(g + 1) * cg], weight=w[g * og:(g + 1) * og], groups=1,
                       bias=None, pad_type="valid", pad=None)
            parts.append(conv(sub, op))
        out = np.concatenate(parts, axis=1)
    if a.get("bias") is not None:
        out = out + _f(a["bias"]).reshape((1, co) + (1,) * len(ks))
    return out


@kernel("conv_transpose")
def conv_transpose(a, op):
    """MIL conv_transpose: weight [C_in, C_out / groups, *K]; each input position scatters
    its kernel-weighted values at stride steps, then `pad` (or pad_type) crops the result and
    `output_shape`, when given, fixes its size (the extra end positions get the bias only)."""
    x, w = _f(a["x"]), _f(a["weight"])
    groups = int(a.get("groups") or 1)
    n, c, sp = x.shape[0], x.shape[1], list(x.shape[2:])
    ks, nd = list(w.shape[2:]), len(w.shape) - 2
    strides = _ints(a["strides"]) if a.get("strides") is not None else [1] * nd
    dil = _ints(a["dilations"]) if a.get("dilations") is not None else [1] * nd
    cg, og = c // groups, w.shape[1]
    full_sp = [(sp[i] - 1) * strides[i] + (ks[i] - 1) * dil[i] + 1 for i in range(nd)]
    full = np.zeros((n, og * groups) + tuple(full_sp), np.float32)
    for g in range(groups):
        xg = x[:, g * cg:(g + 1) * cg].reshape(n, cg, -1)
        for idx in np.ndindex(*ks):
            part = np.einsum("ncp,co->nop", xg, w[(slice(g * cg, (g + 1) * cg), slice(None)) + idx])
            sl = [slice(None), slice(g * og, (g + 1) * og)]
            sl += [slice(k * d, k * d + s * (size - 1) + 1, s) for k, d, s, size in zip(idx, dil, strides, sp)]
            full[tuple(sl)] += part.reshape((n, og) + tuple(sp))
    pad_type = a.get("pad_type") or "valid"
    if pad_type == "custom":
        p = _ints(a["pad"]) if a.get("pad") is not None else [0] * 2 * nd
        pads = [(p[2 * i], p[2 * i + 1]) for i in range(nd)]
    elif pad_type in ("same", "same_lower"):
        totals = [max(full_sp[i] - sp[i] * strides[i], 0) for i in range(nd)]
        pads = [((t // 2, t - t // 2) if pad_type == "same" else (t - t // 2, t // 2)) for t in totals]
    elif pad_type == "valid":
        pads = [(0, 0)] * nd
    else:
        raise NotImplementedError(f"pad_type {pad_type}")
    out_sp = [full_sp[i] - pads[i][0] - pads[i][1] for i in range(nd)]
    if a.get("output_shape") is not None:
        out_sp = _ints(a["output_shape"])[-nd:]
    grow = [max(pads[i][0] + out_sp[i] - full_sp[i], 0) for i in range(nd)]
    if any(grow):
        full = np.pad(full, [(0, 0), (0, 0)] + [(0, e) for e in grow])
    out = full[(slice(None), slice(None)) + tuple(slice(p[0], p[0] + o) for p, o in zip(pads, out_sp))]
    if a.get("bias") is not None:
        out = out + _f(a["bias"]).reshape((1, -1) + (1,) * nd)
    return out


def _pool(a, op, kind):
    x = _f(a["x"])
    ks = _ints(a["kernel_sizes"])
    n_sp = len(ks)
    strides = _ints(a["strides"]) if a.get("strides") is not None else [1] * n_sp
    pads = _pads(a.get("pad_type") or "valid", a.get("pad"), x.shape[2:], ks, strides, [1] * n_sp)
    ceil = bool(a.get("ceil_mode") or False)
    out_sp, extra = [], []
    for i, (size, k, s) in enumerate(zip(x.shape[2:], ks, strides)):
        span = size + pads[i][0] + pads[i][1] - k
        o = (-(-span // s) if ceil else span // s) + 1
        if ceil and (o - 1) * s >= size + pads[i][0]:
            o -= 1   # the last window must start inside the input or its begin padding
        out_sp.append(o)
        extra.append(max((o - 1) * s + k - (size + pads[i][0] + pads[i][1]), 0))
    full = [(0, 0), (0, 0)] + [(p[0], p[1] + e) for p, e in zip(pads, extra)]
    if kind == "max":
        xp = np.pad(x, full, constant_values=-np.inf)
        out = None
        for _, view in _windows(xp, ks, strides, [1] * n_sp, out_sp):
            out = view.copy() if out is None else np.maximum(out, view)
        return out
    xp = np.pad(x, full) if any(p for pair in full for p in pair) else x
    total = np.zeros(x.shape[:2] + tuple(out_sp), np.float32)
    for _, view in _windows(xp, ks, strides, [1] * n_sp, out_sp):
        total += view
    if kind == "l2":
        raise NotImplementedError
    # the divisor: the window inside the input (exclude_padding_from_average) or inside the
    # input plus its explicit padding (never the extra cells of ceil_mode)
    exclude = bool(a.get("exclude_padding_from_average") or False)
    ones = np.ones((1, 1) + x.shape[2:], np.float32)
    if exclude:
        mask = np.pad(ones, full)
    else:
        mask = np.pad(np.pad(ones, [(0, 0), (0, 0)] + list(pads), constant_values=1),
                      [(0, 0), (0, 0)] + [(0, e) for e in extra])
    count = np.zeros((1, 1) + tuple(out_sp), np.float32)
    for _, view in _windows(mask, ks, strides, [1] * n_sp, out_sp):
        count += view
    return total / np.maximum(count, 1)


@kernel("max_pool")
def max_pool(a, op):
    return _pool(a, op, "max")


@kernel("avg_pool")
def avg_pool(a, op):
    return _pool(a, op, "avg")


# -- normalization ---------------------------------------------------------------------------
def _normalized(x, mean, var, a, shape=None):
    """(x - mean) / sqrt(var + epsilon), then times gamma and plus beta (reshaped to `shape`)."""
    out = (x - mean) / np.sqrt(var + np.float32(a.get("epsilon") or 1e-5))
    for name, apply in (("gamma", np.multiply), ("beta", np.add)):
        if a.get(name) is not None:
            v = _f(a[name])
            out = apply(out, v.reshape(shape) if shape is not None else v)
    return out


@kernel("batch_norm")
def batch_norm(a, op):
    x = _f(a["x"])
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = _f(a["mean"]).reshape(shape), _f(a["variance"]).reshape(shape)
    return _normalized(x, mean, var, a, shape)


@kernel("instance_norm")
def instance_norm(a, op):
    x = _f(a["x"])
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return _normalized(x, mean, var, a, (1, -1) + (1,) * (x.ndim - 2))


@kernel("layer_norm")
def layer_norm(a, op):
    x = _f(a["x"])
    axes = tuple(_ints(a["axes"])) if a.get("axes") is not None else tuple(range(x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return _normalized(x, mean, var, a)


@kernel("l2_norm")
def l2_norm(a, op):
    x = _f(a["x"])
    axes = tuple(_ints(a["axes"])) if a.get("axes") is not None else tuple(range(1, x.ndim))
    norm = np.sqrt(np.sum(x * x, axis=axes, keepdims=True))
    return x / np.maximum(norm, np.float32(a.get("epsilon") or 1e-6))


# -- shapes and data movement ----------------------------------------------------------------
def _to_output_shape(a, op):
    shape = op.output_shapes[0]
    if _static(shape):
        return np.reshape(a["x"], shape)
    return None


@kernel("reshape")
def reshape(a, op):
    out = _to_output_shape(a, op)
    if out is not None:
        return out
    x = np.asarray(a["x"])
    shape = _ints(a["shape"])
    shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return np.reshape(x, shape)


@kernel("squeeze")
def squeeze(a, op):
    out = _to_output_shape(a, op)
    if out is not None:
        return out
    x = np.asarray(a["x"])
    axes = a.get("axes")
    return np.squeeze(x, axis=None if axes is None else tuple(_ints(axes)))


@kernel("expand_dims")
def expand_dims(a, op):
    out = _to_output_shape(a, op)
    if out is not None:
        return out
    x = np.asarray(a["x"])
    rank = x.ndim + len(_ints(a["axes"]))
    for ax in sorted(d % rank for d in _ints(a["axes"])):
        x = np.expand_dims(x, ax)
    return x


@kernel("flatten2d")
def flatten2d(a, op):
    x = np.asarray(a["x"])
    axis = int(a.get("axis", 1)) % x.ndim
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@kernel("transpose")
def transpose(a, op):
    return np.transpose(a["x"], _ints(a["perm"]))


@kernel("concat")
def concat(a, op):
    values = [np.asarray(v) for v in a["values"]]
    axis = int(a["axis"])
    if a.get("interleave"):
        stacked = np.stack(values, axis=(axis % values[0].ndim) + 1)
        shape = list(values[0].shape)
        shape[axis] = sum(v.shape[axis] for v in values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


@kernel("stack")
def stack(a, op):
    return np.stack([np.asarray(v) for v in a["values"]], axis=int(a["axis"]))


_GATE_ACTIVATIONS = {"sigmoid": _sigmoid, "tanh": np.tanh, "relu": lambda x: np.maximum(x, 0),
                     "linear": lambda x: x}


@kernel("lstm")
def lstm(a, op):
    """MIL lstm: x [s, b, I]; gates stacked [input, forget, output, cell] in weight_ih [4H, I],
    weight_hh [4H, H] and bias [4H] (both biases summed); peephole [3H] on i and f (c at t-1)
    and on o (c at t); forward, reverse or bidirectional (the second half of the states and
    the *_back weights). Returns (h of every step [s, b, D*H], or of the last [1, b, D*H]; the
    last h [b, D*H]; the last c [b, D*H]). `clip` and the parametric activations are not
    guessed: they stop the executor (NotImplementedError -> structure-only verdict)."""
    if a.get("clip") is not None:
        raise NotImplementedError("lstm with clip")
    names = [a.get("recurrent_activation") or "sigmoid", a.get("cell_activation") or "tanh",
             a.get("activation") or "tanh"]
    if any(n not in _GATE_ACTIVATIONS for n in names):
        raise NotImplementedError(f"lstm activations {names}")
    rec, cell, act = (_GATE_ACTIVATIONS[n] for n in names)
    x, h0, c0 = _f(a["x"]), _f(a["initial_h"]), _f(a["initial_c"])
    direction = a.get("direction") or "forward"

    def run(w_ih, w_hh, bias, peep, h, c, steps):
        hidden = w_hh.shape[1]
        w_ih, w_hh = _f(w_ih), _f(w_hh)
        bias = np.zeros(4 * hidden, np.float32) if bias is None else _f(bias)
        peep = np.zeros(3 * hidden, np.float32) if peep is None else _f(peep)
        pi, pf, po = peep[:hidden], peep[hidden:2 * hidden], peep[2 * hidden:]
        seq = [None] * x.shape[0]
        for t in steps:
            g = x[t] @ w_ih.T + h @ w_hh.T + bias
            gi, gf, go, gz = (g[:, k * hidden:(k + 1) * hidden] for k in range(4))
            i, f = rec(gi + pi * c), rec(gf + pf * c)
            c = f * c + i * cell(gz)
            h = rec(go + po * c) * act(c)
            seq[t] = h
        return np.stack(seq), h, c

    steps = list(range(x.shape[0]))
    if direction == "bidirectional":
        hidden = _f(a["weight_hh"]).shape[1]
        fw = run(a["weight_ih"], a["weight_hh"], a.get("bias"), a.get("peephole"),
                 h0[:, :hidden], c0[:, :hidden], steps)
        bw = run(a["weight_ih_back"], a["weight_hh_back"], a.get("bias_back"), a.get("peephole_back"),
                 h0[:, hidden:], c0[:, hidden:], steps[::-1])
        seq, h, c = (np.concatenate(pair, axis=-1) for pair in zip(fw, bw))
        last = np.concatenate([fw[0][-1], bw[0][0]], axis=-1)[None]
    elif direction in ("forward", "reverse"):
        seq, h, c = run(a["weight_ih"], a["weight_hh"], a.get("bias"), a.get("peephole"), h0, c0,
                        steps if direction == "forward" else steps[::-1])
        last = h[None]
    else:
        raise NotImplementedError(f"lstm direction {direction}")
    return (seq if a.get("output_sequence") else last), h, c


@kernel("split")
def split(a, op):
    x = np.asarray(a["x"])
    axis = int(a["axis"])
    if a.get("split_sizes") is not None:
        cuts = np.cumsum(_ints(a["split_sizes"]))[:-1]
        return tuple(np.split(x, cuts, axis=axis))
    return tuple(np.split(x, int(a["num_splits"]), axis=axis))


@kernel("tile")
def tile(a, op):
    return np.tile(a["x"], _ints(a["reps"]))


@kernel("pad")
def pad(a, op):
    x = np.asarray(a["x"])
    p = _ints(a["pad"])
    k = len(p) // 2
    pads = [(0, 0)] * (x.ndim - k) + [(p[2 * i], p[2 * i + 1]) for i in range(k)]
    mode = a.get("mode") or "constant"
    if mode == "constant":
        return np.pad(x, pads, constant_values=a.get("constant_val") or 0)
    return np.pad(x, pads, mode={"reflect": "reflect", "replicate": "edge",
                                 "circular": "wrap"}[mode])


@kernel("slice_by_index")
def slice_by_index(a, op):
    from coremltools.converters.mil.mil.ops.defs._utils import get_squeeze_axes, solve_slice_by_index_slice

    x = np.asarray(a["x"])
    slices = solve_slice_by_index_slice(x.shape, np.asarray(a["begin"]), np.asarray(a["end"]),
                                        a.get("stride"), a.get("begin_mask"), a.get("end_mask"),
                                        a.get("squeeze_mask"))
    out = x[tuple(slices)]
    axes = get_squeeze_axes(a.get("squeeze_mask"), x.ndim)
    return np.squeeze(out, axis=tuple(axes)) if len(axes) else out


@kernel("slice_by_size")
def slice_by_size(a, op):
    x = np.asarray(a["x"])
    begin, size = _ints(a["begin"]), _ints(a["size"])
    sl = tuple(slice(b, None if s == -1 else b + s) for b, s in zip(begin, size))
    return x[sl]


@kernel("gather")
def gather(a, op):
    x = np.asarray(a["x"])
    idx = np.asarray(a["indices"]).astype(np.int64)
    axis = int(a.get("axis") or 0) % x.ndim
    if int(a.get("batch_dims") or 0):
        raise NotImplementedError("gather with batch_dims")
    return np.take(x, np.where(idx < 0, idx + x.shape[axis], idx), axis=axis)


@kernel("gather_along_axis")
def gather_along_axis(a, op):
    x = np.asarray(a["x"])
    idx = np.asarray(a["indices"]).astype(np.int64)
    axis = int(a.get("axis") or 0) % x.ndim
    return np.take_along_axis(x, np.where(idx < 0, idx + x.shape[axis], idx), axis=axis)


@kernel("shape")
def shape(a, op):
    return np.array(np.asarray(a["x"]).shape, np.int32)


@kernel("fill")
def fill(a, op):
    return np.full(_ints(a["shape"]), a.get("value") or 0.0)


@kernel("range_1d")
def range_1d(a, op):
    return np.arange(a["start"], a["end"], a["step"])


@kernel("upsample_nearest_neighbor")
def upsample_nearest_neighbor(a, op):
    x = np.asarray(a["x"])
    sh, sw = a.get("scale_factor_height", 1), a.get("scale_factor_width", 1)
    if float(sh) != int(sh) or float(sw) != int(sw):
        raise NotImplementedError("fractional nearest-neighbour scale")
    return np.repeat(np.repeat(x, int(sh), axis=-2), int(sw), axis=-1)


@kernel("classify")
def classify(a, op):
    """(predicted label, probabilities in label order); the labels come from the program."""
    probs = np.asarray(a["probabilities"], np.float32).reshape(-1)
    classes = a["classes"]
    if classes is None or len(classes) != probs.size:
        raise ValueError(f"classify: {probs.size} probabilities for "
                         f"{0 if classes is None else len(classes)} classes")
    return classes[int(np.argmax(probs))], probs
