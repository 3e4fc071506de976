"""Read a TFLite flatbuffer (ops, tensors, quantization, metadata) with only the stdlib.

The reader never executes anything from the file and checks every offset it follows, so a
truncated or bit-flipped file ends in `ModelFormatError`, not a crash. It reads the subset of
the TFLite schema (tensorflow/lite/schema/schema.fbs) that edgeport needs: enough to tell a
compiled Edge TPU model from a plain one, to find a model's input spec without an
interpreter, and to predict the Edge TPU compiler's mapping.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from typing import TYPE_CHECKING, Any

from .errors import ModelFormatError
from .tflite_schema import BUILTIN_OPS, TENSOR_TYPES

if TYPE_CHECKING:
    from typing import TypeAlias

    from _typeshed import StrPath

    Buf: TypeAlias = bytes | bytearray | memoryview

FILE_IDENTIFIER = b"TFL3"
_ITEMSIZE = {"float32": 4, "float16": 2, "int32": 4, "uint8": 1, "int64": 8, "bool": 1, "int16": 2,
             "int8": 1, "float64": 8, "uint32": 4, "uint16": 2, "uint64": 8, "complex64": 8,
             "complex128": 16, "int4": 1, "bfloat16": 2}
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"

Quantization = namedtuple("Quantization", "scale zero_point quantized_dimension")
Tensor = namedtuple("Tensor", "index name shape shape_signature dtype buffer quantization")
Operator = namedtuple("Operator", "index opcode version custom_code inputs outputs")
SubGraph = namedtuple("SubGraph", "index name tensors inputs outputs operators")


class _Table:
    """A flatbuffer table: field access by slot number, every offset bounds-checked."""

    __slots__ = ("buf", "pos", "vtable", "vsize")

    def __init__(self, buf: Buf, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        vtable = pos - _read(buf, "<i", pos)
        vsize = _read(buf, "<H", vtable)
        if vsize < 4 or vsize % 2:
            raise ModelFormatError(f"corrupt flatbuffer vtable at byte {vtable}")
        _check(buf, vtable, vsize)
        self.vtable = vtable
        self.vsize = vsize

    def _field(self, slot: int) -> int:
        entry = 4 + 2 * slot
        if entry >= self.vsize:
            return 0
        return _read(self.buf, "<H", self.vtable + entry)

    def scalar(self, slot: int, fmt: str, default: Any = 0) -> Any:
        off = self._field(slot)
        return _read(self.buf, fmt, self.pos + off) if off else default

    def _indirect(self, slot: int) -> int | None:
        off = self._field(slot)
        if not off:
            return None
        at = self.pos + off
        return at + _read(self.buf, "<I", at)

    def table(self, slot: int) -> _Table | None:
        at = self._indirect(slot)
        return None if at is None else _Table(self.buf, at)

    def string(self, slot: int) -> str | None:
        at = self._indirect(slot)
        if at is None:
            return None
        n = _read(self.buf, "<I", at)
        _check(self.buf, at + 4, n)
        return bytes(self.buf[at + 4:at + 4 + n]).decode("utf-8", "replace")

    def vector_span(self, slot: int, itemsize: int) -> tuple[int, int] | None:
        """(start, length) of a vector of `itemsize`-byte items, or None."""
        at = self._indirect(slot)
        if at is None:
            return None
        n = _read(self.buf, "<I", at)
        _check(self.buf, at + 4, n * itemsize)
        return at + 4, n

    def scalars(self, slot: int, code: str) -> list[Any]:
        span = self.vector_span(slot, struct.calcsize(code))
        if span is None:
            return []
        start, n = span
        return list(struct.unpack_from(f"<{n}{code}", self.buf, start))

    def tables(self, slot: int) -> list[_Table]:
        span = self.vector_span(slot, 4)
        if span is None:
            return []
        start, n = span
        out = []
        for i in range(n):
            at = start + 4 * i
            out.append(_Table(self.buf, at + _read(self.buf, "<I", at)))
        return out


def _check(buf: Buf, pos: int, size: int) -> None:
    if pos < 0 or size < 0 or pos + size > len(buf):
        raise ModelFormatError(f"truncated or corrupt TFLite file (offset {pos} + {size} "
                               f"is beyond its {len(buf)} bytes)")


def _read(buf: Buf, fmt: str, pos: int) -> Any:
    _check(buf, pos, struct.calcsize(fmt))
    return struct.unpack_from(fmt, buf, pos)[0]


def is_tflite(head: Buf) -> bool:
    """True when `head` (the first 8 bytes or more of a file) carries the TFLite identifier."""
    return len(head) >= 8 and bytes(head[4:8]) == FILE_IDENTIFIER


class TFLiteModel:
    """A parsed TFLite model. `TFLiteModel.load(path)` or `TFLiteModel(bytes)`."""

    def __init__(self, data: Buf, name: str = "<bytes>") -> None:
        self.data = data
        self.name = name
        # subgraph index -> its operators' tables, read on first use
        self._operator_tables: dict[int, list[_Table]] = {}
        if not is_tflite(data):
            raise ModelFormatError(f"{name} is not a TFLite model (no 'TFL3' identifier)",
                                   "pass a .tflite flatbuffer")
        try:
            self._parse(data, name)
        except ModelFormatError as e:  # name the file, and say what to do
            if e.message.startswith(name):
                raise
            raise ModelFormatError(f"{name}: {e.message}", e.hint or
                                   "the file is truncated or damaged: copy, download or convert it again"
                                   ) from None

    def _parse(self, data: Buf, name: str) -> None:
        root = _Table(data, _read(data, "<I", 0))
        self.version = root.scalar(0, "<I")
        self.description = root.string(3)
        self.opcodes = [self._opcode(t) for t in root.tables(1)]
        self._buffers = root.tables(4)
        self.metadata: dict[str, int] = {}
        for t in root.tables(6):
            self.metadata[t.string(0) or ""] = t.scalar(1, "<I")
        self.sparse: set[tuple[int, int]] = set()  # (subgraph, tensor) of tensors stored sparse (Tensor.sparsity set)
        self.subgraphs = [self._subgraph(i, t) for i, t in enumerate(root.tables(2))]
        if not self.subgraphs:
            raise ModelFormatError(f"{name} has no subgraph")
        self._check_sizes(data)

    def _check_sizes(self, data: Buf) -> None:
        """Refuse what would crash or exhaust a runtime: a main graph without outputs, a zero or
        negative dimension in an input or output, a tensor of absurd size, a buffer past the end."""
        from .files import check_tensor_size

        main = self.subgraphs[0]
        if not main.outputs:
            raise ModelFormatError("damaged: the main subgraph has no outputs")
        for i in (*main.inputs, *main.outputs):
            if i < 0:
                continue
            t = main.tensors[i]
            if any(d == 0 for d in t.shape) or any(d < -1 for d in t.shape):
                raise ModelFormatError(f"damaged: tensor '{t.name}' has shape {list(t.shape)} "
                                       "(a dimension of 0 or below)")
        for g in self.subgraphs:
            for t in g.tensors:
                if any(d < -1 for d in t.shape):
                    raise ModelFormatError(f"damaged: tensor '{t.name}' has shape {list(t.shape)}")
                check_tensor_size(self.name, t.name, t.shape, _ITEMSIZE.get(str(t.dtype).lower(), 8), ModelFormatError)
        for i, b in enumerate(self._buffers):
            offset, size = b.scalar(1, "<Q"), b.scalar(2, "<Q")
            if size > 1 and (offset <= 1 or offset + size > len(data)):
                raise ModelFormatError(f"damaged: buffer {i} claims {size} bytes at offset {offset}, "
                                       f"beyond the file's {len(data)} bytes")

    @classmethod
    def load(cls, path: StrPath) -> TFLiteModel:
        from .errors import InputError
        from .files import read_input

        try:
            data = read_input(path, "model", "model")  # a regular file of bounded size only
        except InputError as e:
            raise ModelFormatError(e.message, e.hint) from None
        return cls(data, str(path))

    @staticmethod
    def _opcode(t: _Table) -> tuple[str, int, str | None]:
        deprecated = t.scalar(0, "<b")
        code = max(deprecated, t.scalar(3, "<i"))
        name = BUILTIN_OPS.get(code, f"UNKNOWN_{code}")
        custom = t.string(1)
        if name == "CUSTOM" and not custom:  # the TFLite runtime refuses these too (fuzzing found one)
            raise ModelFormatError("a CUSTOM operator code has no custom_code name")
        return name, t.scalar(2, "<i", 1), custom

    def _subgraph(self, index: int, t: _Table) -> SubGraph:
        tensors = []
        for i, tt in enumerate(t.tables(0)):
            if tt.table(6) is not None:
                self.sparse.add((index, i))
            q = tt.table(4)
            quant = None
            if q is not None:
                scale = q.scalars(2, "f")
                if scale:
                    quant = Quantization(scale, q.scalars(3, "q"), q.scalar(6, "<i"))
            dtype_code = tt.scalar(1, "<b")
            tensors.append(Tensor(i, tt.string(3) or "", tuple(tt.scalars(0, "i")),
                                  tuple(tt.scalars(7, "i")) or None,
                                  TENSOR_TYPES.get(dtype_code, f"UNKNOWN_{dtype_code}"),
                                  tt.scalar(2, "<I"), quant))
        ops = []
        for i, ot in enumerate(t.tables(3)):
            idx = ot.scalar(0, "<I")
            if idx >= len(self.opcodes):
                raise ModelFormatError(f"{self.name}: operator {i} names opcode {idx}, "
                                       f"but the model has {len(self.opcodes)}")
            name, version, custom = self.opcodes[idx]
            ops.append(Operator(i, name, version, custom, tuple(ot.scalars(1, "i")),
                                tuple(ot.scalars(2, "i"))))
        n = len(tensors)
        for ref in [*t.scalars(1, "i"), *t.scalars(2, "i"),
                    *(x for op in ops for x in op.inputs + op.outputs)]:
            if ref >= n or ref < -1:
                raise ModelFormatError(f"{self.name}: a tensor index ({ref}) is out of range")
        return SubGraph(index, t.string(4) or "", tensors, tuple(t.scalars(1, "i")),
                        tuple(t.scalars(2, "i")), ops)

    # -- queries -------------------------------------------------------------------------
    @property
    def main(self) -> SubGraph:
        return self.subgraphs[0]

    def inputs(self) -> list[Tensor]:
        return [self.main.tensors[i] for i in self.main.inputs]

    def outputs(self) -> list[Tensor]:
        return [self.main.tensors[i] for i in self.main.outputs]

    def op_names(self) -> list[str]:
        """Every op of the main subgraph, custom ops by their custom code."""
        return [op.custom_code if op.opcode == "CUSTOM" else op.opcode for op in self.main.operators]

    def custom_ops(self) -> list[str]:
        return sorted({op.custom_code for g in self.subgraphs for op in g.operators
                       if op.opcode == "CUSTOM"})

    def is_edgetpu_compiled(self) -> bool:
        return EDGETPU_CUSTOM_OP in self.custom_ops()

    @property
    def buffer_count(self) -> int:
        """How many buffers the model declares (a tensor's `buffer` must be below it)."""
        return len(self._buffers)

    def operator_options(self, subgraph_index: int, op_index: int, fields: dict[str, tuple[int, str]],
                         defaults: dict[str, Any] | None = None) -> dict[str, Any]:
        """Scalar fields of one operator's builtin options table, as {name: value}.

        `fields` is {name: (slot, struct code)} with slots from TFLite's schema.fbs, e.g.
        {"stride_w": (1, "<i")} for CONV_2D; an absent table or field gives its default
        (`defaults.get(name)`, else False for a bool "<?" field and 0 for a number). Offsets are
        bounds-checked: ModelFormatError on a damaged file.
        """
        defaults = defaults or {}
        if subgraph_index not in self._operator_tables:
            root = _Table(self.data, _read(self.data, "<I", 0))
            self._operator_tables[subgraph_index] = root.tables(2)[subgraph_index].tables(3)
        options = self._operator_tables[subgraph_index][op_index].table(4)
        out: dict[str, Any] = {}
        for name, (slot, code) in fields.items():
            default = defaults.get(name, False if code == "<?" else 0)
            out[name] = options.scalar(slot, code, default) if options is not None else default
        return out

    def buffer_data(self, index: int) -> bytes:
        """The bytes of buffer `index` (b'' when it holds none)."""
        if index >= len(self._buffers):
            return b""
        t = self._buffers[index]
        span = t.vector_span(0, 1)
        if span is not None:
            start, n = span
            return bytes(self.data[start:start + n])
        offset, size = t.scalar(1, "<Q"), t.scalar(2, "<Q")
        if offset > 1:
            _check(self.data, offset, size)
            return bytes(self.data[offset:offset + size])
        return b""

    def metadata_bytes(self, name: str) -> bytes | None:
        return self.buffer_data(self.metadata[name]) if name in self.metadata else None
