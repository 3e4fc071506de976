"""The one registry of conversions, and the planner that finds routes over it.

Each conversion is one small function registered once as an edge (from_format, to_format):

    @conversion(formats.ONNX, formats.ORT, extra="convert")
    def onnx_to_ort(source, output_path, options):   # source: Artefact
        ...write the model to output_path...
        return {"opset": 13}                           # metadata for the new artefact

A function that converts several source formats the same way registers them at once, one
edge per source: @conversion((formats.KERAS, formats.SAVEDMODEL), formats.ONNX).

Modules holding conversions import their framework inside the function, never at the top,
so loading the registry is cheap. Adding a conversion never touches a central switch: only
the module list below names where conversions live.
"""

import heapq
import importlib
from dataclasses import dataclass, field

from edge.errors import InputError

# Modules that register conversions (each imports nothing heavy at module level).
CONVERSION_MODULES = (
    "converters.routes.tf2onnx",          # TF SavedModel, Keras, TFLite -> ONNX (tf2onnx)
    "converters.routes.onnxruntime",      # ONNX -> ORT (onnxruntime.tools)
    "converters.routes.tflite_converter", # SavedModel, Keras -> TFLite float and full-int8
    "converters.routes.tflite_quantizer", # float TFLite -> full-int8 (TFLite calibrator)
    "converters.routes.coremltools",      # TF/Keras, ONNX -> Core ML (onnx2coreml)
    "converters.routes.onnx2tf",          # ONNX -> TFLite float (onnx2tf, in its own toolenv)
    "converters.routes.torch",            # PyTorch -> ONNX, TFLite float / full-int8, Core ML
    "converters.edgetpu.compile",         # full-int8 TFLite -> Edge TPU (edgetpu_compiler)
)


@dataclass(frozen=True)
class Conversion:
    source: str
    target: str
    func: object = field(compare=False)
    extra: str = "convert"          # the pip extra whose packages this conversion needs
    cost: int = 1                   # the planner prefers cheaper routes
    needs: tuple = ()               # option names that must be set, e.g. ("calibration",); an
                                    # entry that is a tuple is met by any one of its options

    def missing(self, options):
        """The entries of `needs` that `options` leaves unset (each a name or a tuple of names)."""
        return [need for need in self.needs
                if not any(getattr(options, n) for n in
                           ((need,) if isinstance(need, str) else need))]

    @property
    def name(self):
        return f"{self.source} -> {self.target}"


_REGISTRY = {}
_loaded = False


def conversion(source, target, extra="convert", cost=1, needs=()):
    """Decorator: register `func` as the conversion from `source` to `target`.

    `source` is one format or a tuple of formats (one edge each, same extra, cost and needs).
    """
    sources = (source,) if isinstance(source, str) else tuple(source)
    if not sources:
        raise ValueError("a conversion needs at least one source format")

    def register(func):
        for src in sources:
            key = (src, target)
            if key in _REGISTRY and _REGISTRY[key].func is not func:
                raise RuntimeError(f"two conversions registered for {src} -> {target}")
        for src in sources:
            _REGISTRY[(src, target)] = Conversion(src, target, func, extra, cost, tuple(needs))
        return func

    return register


def load_registry():
    """Import every conversion module once; returns {(source, target): Conversion}."""
    global _loaded
    if not _loaded:
        for name in CONVERSION_MODULES:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as e:
                if e.name != name:  # a module that exists but imports something missing is a bug
                    raise
        _loaded = True
    return dict(_REGISTRY)


def conversions():
    return sorted(load_registry().values(), key=lambda c: (c.source, c.target))


def plan_route(source, target, usable=None, rewrites=None):
    """The cheapest list of Conversions from format `source` to format `target` (Dijkstra),
    using only the conversions `usable(c)` accepts when it is given. With `rewrites(c)` (how
    many graph rewrites conversion `c` needs, converters/rewrite), the route needing the
    fewest rewrites wins, and among those the cheapest."""
    graph = {}
    for c in load_registry().values():
        if usable is None or usable(c):
            graph.setdefault(c.source, []).append(c)
    if source == target:
        return []
    queue = [(0, 0, 0, source, [])]
    seen = set()
    tie = 0
    while queue:
        count, cost, _, fmt, path = heapq.heappop(queue)
        if fmt == target:
            return path
        if fmt in seen:
            continue
        seen.add(fmt)
        for c in sorted(graph.get(fmt, []), key=lambda c: c.target):
            if c.target not in seen:
                tie += 1
                heapq.heappush(queue, (count + (rewrites(c) if rewrites else 0), cost + c.cost, tie,
                                       c.target, path + [c]))
    reachable = sorted(reachable_from(source))
    hint = f"from {source} edgeport reaches: {', '.join(reachable) or 'nothing'}"
    raise InputError(f"no conversion route from {source} to {target}", hint)


def reachable_from(source):
    graph = {}
    for c in load_registry().values():
        graph.setdefault(c.source, []).append(c.target)
    seen, stack = set(), [source]
    while stack:
        for nxt in graph.get(stack.pop(), []):
            if nxt not in seen and nxt != source:
                seen.add(nxt)
                stack.append(nxt)
    return seen
