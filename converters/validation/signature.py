"""A model's input signature, and the shapes, ranges and data the user gives for it.

    ov = InputOverrides.parse(shapes=["x:[1,3,640,640]", "sr:[]"], ranges=["sr:[16000,16000]"],
                              data="audio.npz")
    sig = resolve(runner.input_metadata(), ov)   # -> Signature
    sig.metas            # [TensorMeta] with every dimension fixed (what the run uses)
    sig.inputs           # [InputSignature]: name, dtype, model shape, used shape, where from
    sig.placeholders     # {name: shape} of inputs run on shapes nobody chose
    sig.notes            # one line per open dimension filled, saying how to set it

Polygraphy's conventions: `--input-shapes name:[1,3,640,640] other:[1,512]` (a bare shape
for a single-input model), `--val-range name:[lo,hi]` (a bare range for every input),
`--data FILE.npz` (arrays keyed by input name; an array with one more dimension than the
input is a stack of samples). No open dimension silently becomes 1: a dimension the user
did not set and the model left open is filled from --data, else by a placeholder (batch 1,
image height/width from the preprocessing size or 224, anything else 32), and the
signature says so; a verdict on placeholder shapes says so too.
"""

import math
import re
from dataclasses import dataclass, field

import numpy as np

# The --data contract (reading the .npz, splitting a stack into samples) is shared with
# full-int8 calibration from arrays, so it lives beside the calibration loaders.
from converters.quantize.calibration import data_samples, load_data  # noqa: F401
from edge.errors import InputError
from edge.files import printable
from edge.random_inputs import random_values

PLACEHOLDER_IMAGE = 224
PLACEHOLDER_OTHER = 32

_SHAPE = re.compile(r"^\[\s*(-?\d+\s*(,\s*-?\d+\s*)*)?\]$")


def parse_shape(text):
    """'[1,3,224,224]', '1x3x224x224', '1,3,224,224' or '[]' (a scalar) -> tuple of ints."""
    t = str(text).strip()
    if t in ("[]", "()", "scalar"):
        return ()
    if not t.startswith("["):
        t = "[" + t.replace("x", ",") + "]"
    t = t.replace("(", "[").replace(")", "]")
    if not _SHAPE.match(t):
        raise InputError(f"cannot read the shape '{text}'",
                         "write it as [1,3,224,224] (or [] for a scalar)")
    if len(t) > 400:
        raise InputError(f"shape '{printable(text)[:40]}...' is too long", "at most 32 dimensions")
    dims = tuple(int(d) for d in t.strip("[]").split(",") if d.strip())
    if len(dims) > MAX_RANK or any(d > MAX_DIM for d in dims):
        raise InputError(f"shape '{printable(text)}' has more than {MAX_RANK} dimensions or a "
                         f"dimension above {MAX_DIM}", "give the model's real input shape")
    if any(d < 1 for d in dims):
        raise InputError(f"shape '{text}' has a dimension below 1", "give every dimension a size")
    return dims


def _split_named(item):
    """'name:[..]' -> ('name', '[..]'); '[..]' -> (None, '[..]'). Names may contain ':'."""
    s = str(item).strip()
    i = s.rfind(":[")
    if i < 0:
        i = s.rfind(":(")
    if i < 0 and ":" in s and not s.startswith("["):
        i = s.rfind(":")
    if i > 0:
        return s[:i], s[i + 1:]
    return None, s


MAX_RANK = 32
MAX_DIM = (1 << 31) - 1


def _put(out, name, value, flag):
    """out[name] = value, refusing a name given twice (the last one would win silently)."""
    if name in out:
        shown = "a bare value (for every input)" if name is None else f"input '{printable(name)}'"
        raise InputError(f"{flag} gives {shown} twice", "give each input once")
    out[name] = value


def parse_input_shapes(items):
    """['x:[1,3,640,640]', 'sr:[]'] or ['[1,3,640,640]'] -> {name or None: shape}.
    InputError for an empty item or a name given twice."""
    out = {}
    for item in items or ():
        if not str(item).strip():
            raise InputError("--input-shapes has an empty value", "write name:[1,3,224,224]")
        for part in _split_items(item):
            name, text = _split_named(part)
            _put(out, name, parse_shape(text), "--input-shapes")
    return out


def _split_items(item):
    """One argument may hold several 'name:[..]' separated by spaces."""
    return [p for p in re.split(r"(?<=\])\s+", str(item).strip()) if p]


def parse_val_ranges(items):
    """['x:[0,1]', '[-1,1]'] -> {name or None: (lo, hi)}."""
    out = {}
    for item in items or ():
        if not str(item).strip():
            raise InputError("--val-range has an empty value", "write name:[lo,hi], e.g. x:[0,1]")
        for part in _split_items(item):
            name, text = _split_named(part)
            t = text.strip().strip("[]()")
            try:
                lo, hi = (float(v) for v in t.split(","))
            except ValueError:
                raise InputError(f"cannot read the value range '{printable(part)}'",
                                 "write it as name:[lo,hi], e.g. x:[0,1]") from None
            if not (math.isfinite(lo) and math.isfinite(hi)) or max(abs(lo), abs(hi)) > MAX_VALUE:
                raise InputError(f"value range '{printable(part)}' is not two finite numbers "
                                 f"within +-{MAX_VALUE:g}", "write it as name:[lo,hi], e.g. x:[0,1]")
            if hi < lo:
                raise InputError(f"value range '{printable(part)}' has hi below lo")
            _put(out, name, (lo, hi), "--val-range")
    return out


MAX_VALUE = 1e30


def parse_args(items):
    """['sr=16000', 'flag=true'] -> {'sr': '16000', 'flag': 'true'} (cast by the runner)."""
    out = {}
    for item in items or ():
        name, eq, value = str(item).partition("=")
        if not eq or not name.strip():
            raise InputError(f"--arg {printable(item)}: write it as NAME=VALUE, e.g. sr=16000")
        if name.strip() in out:
            raise InputError(f"--arg gives '{printable(name.strip())}' twice", "give each argument once")
        out[name.strip()] = value.strip()
    return out


MAX_FIXED_VALUES = 1 << 20   # numbers in one --fix value (a JSON list of a million is plenty)


def _fixed_value(name, text):
    """A number, or a JSON list of numbers (nested, rectangular), all finite within +-MAX_VALUE."""
    import json

    hint = "write NAME=VALUE with a number or a JSON list of numbers, e.g. sr=16000 or w=[1,2]"
    if len(text) > 16 * MAX_FIXED_VALUES:
        raise InputError(f"--fix {printable(name)}: the value is longer than {16 * MAX_FIXED_VALUES} "
                         "characters", hint)
    try:
        value = json.loads(text, parse_constant=lambda c: float("nan"))
        arr = np.asarray(value, dtype=np.float64) if not isinstance(value, (bool, str, dict)) \
            and value is not None else None
    except (ValueError, TypeError, RecursionError):
        arr = None
    if arr is None or arr.dtype == object or arr.size == 0:
        raise InputError(f"--fix {printable(name)}={printable(text[:80])}: not a number or a "
                         "rectangular JSON list of numbers", hint)
    if not np.all(np.isfinite(arr)) or np.max(np.abs(arr)) > MAX_VALUE:
        raise InputError(f"--fix {printable(name)}: the value is not finite numbers within "
                         f"+-{MAX_VALUE:g}", hint)
    return value


def parse_fixed(items):
    """['sr=16000', 'w=[1,2]'] -> {'sr': 16000, 'w': [1, 2]}: inputs turned into constants
    (the dtype is the input's, applied when the model is read)."""
    out = {}
    for item in items or ():
        name, eq, value = str(item).partition("=")
        if not eq or not name.strip() or not value.strip():
            raise InputError(f"--fix {printable(item)}: write it as NAME=VALUE, e.g. sr=16000")
        if name.strip() in out:
            raise InputError(f"--fix gives '{printable(name.strip())}' twice", "give each input once")
        out[name.strip()] = _fixed_value(name.strip(), value.strip())
    return out


@dataclass
class InputOverrides:
    """What the user said about the inputs: shapes, value ranges, data."""

    shapes: dict = field(default_factory=dict)     # name (None: the only input) -> shape
    ranges: dict = field(default_factory=dict)     # name (None: every input) -> (lo, hi)
    data: dict = None                              # name -> array (one sample, or a stack)
    data_path: str = None
    args: dict = field(default_factory=dict)       # non-tensor forward arguments: name -> text
    fixed: dict = field(default_factory=dict)      # --fix: input name -> number or nested list

    @classmethod
    def parse(cls, shapes=None, ranges=None, data=None, args=None, fixed=None):
        return cls(parse_input_shapes(shapes), parse_val_ranges(ranges),
                   load_data(data) if data else None, data, parse_args(args), parse_fixed(fixed))

    def __bool__(self):
        return bool(self.shapes or self.ranges or self.data or self.args or self.fixed)

    def fixed_for(self, name, shape, dtype):
        """The --fix value of input `name` as an array of `shape` and `dtype` (a scalar or a
        smaller list is broadcast), or None when the input is not fixed."""
        if name not in (self.fixed or {}):
            return None
        value = np.asarray(self.fixed[name], dtype=np.float64)
        dt = np.dtype(dtype)
        if dt.kind in "iub":   # an integer or bool input: whole numbers its dtype holds
            lo, hi = (0, 1) if dt.kind == "b" else (np.iinfo(dt).min, np.iinfo(dt).max)
            if np.any(value != np.round(value)) or value.min() < lo or value.max() > hi:
                raise InputError(f"--fix {printable(name)}: input {printable(name)} is {dt.name}, which "
                                 f"holds whole numbers from {lo} to {hi}", "give values of the input's dtype")
        try:
            return np.ascontiguousarray(np.broadcast_to(value, tuple(shape))).astype(dtype)
        except ValueError:
            raise InputError(f"--fix {printable(name)} has shape {list(value.shape)}, which does not "
                             f"fit the input's shape {list(shape)}",
                             "give a number, or a list of the input's shape") from None

    def range_for(self, name):
        return self.ranges.get(name, self.ranges.get(None))


@dataclass
class InputSignature:
    name: str
    dtype: str
    model_shape: tuple               # None for an open dimension
    shape: tuple                     # the shape used
    shape_from: str                  # model | user | data | linked | size | placeholder | batch
    scale: float = 0.0
    zero_point: int = 0
    feed: str = "data"               # image (pixels through preprocessing) | data

    def to_dict(self):
        return {"name": self.name, "dtype": self.dtype,
                "model_shape": [d if d is not None else None for d in self.model_shape],
                "shape": list(self.shape), "shape_from": self.shape_from,
                "quantization": ({"scale": self.scale, "zero_point": self.zero_point}
                                 if self.scale else None), "feed": self.feed}

    def describe(self):
        ms = "[" + ",".join("?" if d is None else str(d) for d in self.model_shape) + "]"
        q = f" q(scale {self.scale:.4g}, zp {self.zero_point})" if self.scale else ""
        used = "" if self.shape_from == "model" else f" -> {list(self.shape)} ({self.shape_from})"
        return f"{self.name} {self.dtype}{ms}{q} {self.feed}{used}"


@dataclass
class Signature:
    metas: list
    inputs: list
    notes: list = field(default_factory=list)

    @property
    def placeholders(self):
        return {s.name: list(s.shape) for s in self.inputs if s.shape_from == "placeholder"}

    @property
    def shapes(self):
        return {s.name: list(s.shape) for s in self.inputs}

    def to_dict(self):
        return {"inputs": [s.to_dict() for s in self.inputs], "placeholders": self.placeholders,
                "notes": list(self.notes)}


def _is_image(meta, shape):
    """'NHWC' or 'NCHW' when a 4-D input looks like an image (1 or 3 channels), else None."""
    if len(shape) != 4:
        return None
    c_first, c_last = shape[1] in (1, 3), shape[3] in (1, 3)
    if c_first and not c_last:
        return "NCHW"
    if c_last and not c_first:
        return "NHWC"
    if c_first and c_last:
        return meta.layout if meta.layout in ("NHWC", "NCHW") else "NHWC"
    return None


def _placeholder(meta, image_size):
    """The shape of an input with open dimensions when nobody chose one, and whether any
    dimension other than a leading batch was filled."""
    shape = list(meta.shape)
    layout = _is_image(meta, shape)
    spatial = {1, 2} if layout == "NHWC" else {2, 3} if layout == "NCHW" else set()
    hw = list(image_size or (PLACEHOLDER_IMAGE, PLACEHOLDER_IMAGE))
    filled_other = False
    for i, d in enumerate(shape):
        if d is not None:
            continue
        if i == 0 and len(shape) > 1:
            shape[i] = 1
        elif i in spatial:
            shape[i] = int(hw[0] if i == min(spatial) else hw[-1])
            filled_other = filled_other or not image_size  # --size / the sidecar's size is chosen
        else:
            shape[i] = PLACEHOLDER_OTHER
            filled_other = True
    return tuple(shape), filled_other


def _data_shape(arr, meta):
    """The shape of one sample of `arr` for an input of rank len(meta.shape)."""
    rank = len(meta.shape)
    if arr.ndim == rank + 1:
        return tuple(arr.shape[1:])
    if arr.ndim == rank:
        return tuple(arr.shape)
    raise InputError(f"--data array '{meta.name}' has shape {list(arr.shape)}, but the input "
                     f"has {rank} dimensions {_fmt(meta.shape)}",
                     "give one sample, or a stack of samples along a new first axis")


def _fmt(shape):
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def _compatible(shape, model_shape):
    return len(shape) == len(model_shape) and all(
        m is None or m == s for s, m in zip(shape, model_shape))


def resolve(metas, overrides=None, image_size=None, image_inputs=(), dim_names=None):
    """Fix every dimension of `metas` ([TensorMeta]) -> Signature.

    Args:
      overrides: InputOverrides (shapes, ranges, data) or None.
      image_size: (h, w) of the preprocessing spec, for open image dimensions.
      image_inputs: names of inputs fed images (the rest are fed data).
      dim_names: {input: [symbolic name or None per dim]} (ONNX's dim_param): a name the
        user's shapes or --data fix, fixes the same dimension of every other input.

    The steps: the user's names checked against the model's (_user_shapes); the symbolic
    dimensions the user fixed bound first (_Dims.bind_user); then per input its shape and
    where it came from (_linked_shape, _shape_of), its names bound for the inputs after it,
    and its layout guessed again on the fixed shape (_fixed_meta).
    """
    ov = overrides or InputOverrides()
    shapes = _user_shapes(metas, ov)
    data = ov.data or {}
    dims = _Dims(dim_names or {})
    dims.bind_user(metas, shapes, data)
    out_metas, sigs, notes = [], [], []
    for m in metas:
        linked = _linked_shape(m, shapes, data, dims)
        shape, src, note = _shape_of(m, shapes, data, image_size, linked, dims)
        if note:
            notes.append(note)
        dims.bind(m, shape, src == "placeholder")  # a placeholder's names fill the same names elsewhere
        out_metas.append(_fixed_meta(m, shape))
        sigs.append(InputSignature(m.name, np.dtype(m.dtype).name, tuple(m.shape), tuple(shape),
                                   src, float(m.scale or 0.0), int(m.zero_point or 0),
                                   "image" if m.name in image_inputs else "data"))
    return Signature(out_metas, sigs, notes)


def _user_shapes(metas, ov):
    """{input: shape} of --input-shapes (a bare shape given to the single input), after every
    name in --input-shapes, --val-range and --data is checked to be one of the model's."""
    names = [m.name for m in metas]
    shapes = dict(ov.shapes)
    if None in shapes:
        if len(metas) != 1:
            raise InputError(f"a bare --input-shapes {_fmt(shapes[None])} fits a single-input "
                             f"model; this one has {len(metas)} inputs ({', '.join(names)})",
                             "name each: --input-shapes " + " ".join(f"{n}:[...]" for n in names))
        shapes[names[0]] = shapes.pop(None)
    unknown = [n for n in shapes if n not in names]
    if unknown:
        raise InputError(f"--input-shapes names no input '{unknown[0]}'",
                         f"the model's inputs are: {', '.join(names)}")
    unknown = [n for n in ov.ranges if n is not None and n not in names]
    if unknown:
        raise InputError(f"--val-range names no input '{unknown[0]}'",
                         f"the model's inputs are: {', '.join(names)}")
    unknown = [n for n in (ov.data or {}) if n not in names]
    if unknown:
        raise InputError(f"--data {ov.data_path} has an array '{unknown[0]}' that is no input",
                         f"the model's inputs are: {', '.join(names)}")
    return shapes


class _Dims:
    """Symbolic dimension names (ONNX's dim_param) bound to sizes as inputs are fixed."""

    def __init__(self, dim_names):
        self.names = dim_names
        self.bound = {}          # symbolic dimension name -> size, from the user's shapes and --data
        self.made_up = set()     # names bound to a placeholder size

    def bind(self, m, shape, placeholder=False):
        for i, (sym, d) in enumerate(zip(self.names.get(m.name) or (), shape)):
            if sym and sym not in self.bound:
                self.bound[sym] = int(d)
                if placeholder and i > 0 and m.shape[i] is None:
                    self.made_up.add(sym)

    def bind_user(self, metas, shapes, data):
        """What the user fixed (--input-shapes, then --data) binds the names first."""
        for m in metas:
            if m.name in shapes and len(shapes[m.name]) == len(m.shape):
                self.bind(m, shapes[m.name])
            elif m.name in data:
                try:
                    self.bind(m, _data_shape(data[m.name], m))
                except InputError:
                    pass

    def open_named(self, m):
        """[(index, name)] of `m`'s open dimensions that carry a symbolic name."""
        syms = self.names.get(m.name) or ()
        return [(i, syms[i]) for i, d in enumerate(m.shape) if d is None and i < len(syms)]


def _linked_shape(m, shapes, data, dims):
    """True when every open dimension of an input the user did not set is named like one
    already bound: its shape (set in `shapes`) comes from the others."""
    if m.name in shapes or m.name in data:
        return False
    named = dict(dims.open_named(m))
    if not any(s in dims.bound for s in named.values()):
        return False
    linked = tuple(dims.bound[named[i]] if d is None and named.get(i) in dims.bound else d
                   for i, d in enumerate(m.shape))
    if any(d is None for d in linked):
        return False
    shapes[m.name] = linked
    return True


def _shape_of(m, shapes, data, image_size, linked, dims):
    """(shape, where from, note or None) of one input: linked to others' names, the user's,
    --data's, the model's own, or a placeholder."""
    if m.name in shapes and linked:
        shape = shapes[m.name]
        if any(s in dims.made_up for _, s in dims.open_named(m)):
            return shape, "placeholder", (
                f"input '{m.name}' {_fmt(m.shape)} shares open dimensions with a "
                f"placeholder; ran it as {list(shape)}: set the real shapes with --input-shapes")
        return shape, "linked", (f"input '{m.name}' {_fmt(m.shape)}: its open dimensions are "
                                 f"named like those you set, ran it as {list(shape)}")
    if m.name in shapes:
        shape = shapes[m.name]
        if not _compatible(shape, m.shape):
            raise InputError(f"--input-shapes {m.name}:{list(shape)} does not fit the model's "
                             f"input {_fmt(m.shape)}",
                             "keep the fixed dimensions and set only the open ones (?)")
        return shape, "user", None
    if m.name in data:
        shape = _data_shape(data[m.name], m)
        if not _compatible(shape, m.shape):
            raise InputError(f"--data array '{m.name}' has sample shape {list(shape)}, which "
                             f"does not fit the model's input {_fmt(m.shape)}")
        return shape, "data", None
    if all(d is not None for d in m.shape):
        return tuple(m.shape), "model", None
    return _placeholder_shape(m, image_size)


def _placeholder_shape(m, image_size):
    """(shape, where from, note) of an input with open dimensions nobody set."""
    shape, other = _placeholder(m, image_size)
    if other:
        return shape, "placeholder", (
            f"input '{m.name}' {_fmt(m.shape)} has open dimensions; ran it as {list(shape)} "
            f"(a placeholder): set the real shape with "
            f"--input-shapes {m.name}:[{','.join(map(str, shape))}]")
    if image_size and _is_image(m, m.shape) and any(d is None for d in m.shape[1:]):
        return shape, "size", (f"input '{m.name}' {_fmt(m.shape)} has open dimensions; ran it "
                               f"as {list(shape)} (the preprocessing size)")
    return shape, "batch", (f"input '{m.name}' {_fmt(m.shape)} has an open batch dimension; "
                            f"ran it with batch 1")


def _fixed_meta(m, shape):
    """`m` with every dimension fixed; the layout guessed again when it was guessed on open
    (1-filled) dimensions, which may have been wrong."""
    fixed = tuple(int(d) for d in shape)
    layout = m.layout
    if any(d is None for d in m.shape):
        from edge.preprocess import guess_layout

        layout = _is_image(m._replace(layout=None), m.shape) or guess_layout(fixed)
    return m._replace(shape=fixed, layout=layout)


random_value = random_values   # the one generator (edge/random_inputs.py), by its old name here


def feeder(overrides=None, image_size=None):
    """A feeder for edge.bench.benchmark: the inputs it runs, shaped by `resolve`.

    Returns f(inputs, rng) -> ({name: array}, {name: 'AxBxC (from)'}, [notes]), with `inputs`
    a list of (name, shape with None for open dims, dtype, scale, zero point).
    """
    from converters.validation.runners.base import tensor_meta

    def feed(inputs, rng):
        metas = [tensor_meta(n, [d if isinstance(d, int) else -1 for d in shape], dt, sc, zp)
                 for n, shape, dt, sc, zp in inputs]
        names = {n: [d if isinstance(d, str) and d else None for d in shape]
                 for n, shape, *_ in inputs}
        sig = resolve(metas, overrides, image_size=image_size, dim_names=names)
        feeds, shapes = {}, {}
        ov = overrides or InputOverrides()
        for m, s in zip(sig.metas, sig.inputs):
            if ov.data and m.name in ov.data:
                x = np.asarray(data_samples(ov.data[m.name], m.shape)[0]).astype(m.dtype)
            else:
                r = ov.range_for(m.name)
                if r is not None and m.scale and np.issubdtype(m.dtype, np.integer):
                    from edge.tensors import quantize

                    x = quantize(random_values(rng, m.shape, np.float32, *r),
                                 m.scale, m.zero_point, m.dtype)
                elif r is not None:
                    x = random_values(rng, m.shape, m.dtype, *r)
                elif np.issubdtype(m.dtype, np.integer) and m.scale:   # every stored value
                    info = np.iinfo(m.dtype)
                    x = random_values(rng, m.shape, m.dtype, info.min, info.max)
                else:
                    x = random_values(rng, m.shape, m.dtype)
            feeds[m.name] = np.ascontiguousarray(x)
            dims = "x".join(map(str, m.shape)) or "scalar"
            shapes[m.name] = dims + ("" if s.shape_from == "model" else f" ({s.shape_from})")
        return feeds, shapes, list(sig.notes)

    return feed
