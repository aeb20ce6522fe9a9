"""Reads the metadata header of a GGUF file (format facts from the GGUF specification).

Only the key/value section is read, from the start of the file; tensor data is never touched. Arrays (the
tokenizer's vocabulary can be megabytes) are skipped without being kept, and the number of bytes read is
capped so a hostile file cannot make the reader run away.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

MAGIC = b"GGUF"
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_STRING = 8
_ARRAY = 9
_MAX_STRING = 16 * 1024 * 1024
_MAX_KEPT_STRING = 256 * 1024

#: llama.cpp's ``llama_ftype`` values, as Ollama names them (quantization of the whole file).
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
}


class GgufError(ValueError):
    """The data is not a GGUF file, or its header is truncated or malformed."""


Scalar = int | float | bool | str


@dataclass(frozen=True)
class GgufInfo:
    version: int
    tensor_count: int
    metadata: dict[str, Scalar] = field(default_factory=dict)
    array_lengths: dict[str, int] = field(default_factory=dict)

    def text(self, key: str) -> str:
        value = self.metadata.get(key)
        return value if isinstance(value, str) else ""

    def integer(self, key: str) -> int | None:
        value = self.metadata.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def architecture(self) -> str:
        return self.text("general.architecture")

    @property
    def quantization(self) -> str:
        file_type = self.integer("general.file_type")
        return FILE_TYPES.get(file_type, f"type {file_type}") if file_type is not None else ""

    @property
    def parameter_size(self) -> str:
        """Ollama's style: ``268.10M``, ``8.0B``; the file's size label when no count is recorded."""
        count = self.integer("general.parameter_count")
        if count:
            return _human_count(count)
        return self.text("general.size_label")

    @property
    def chat_template(self) -> str:
        return self.text("tokenizer.chat_template")


def _human_count(count: int) -> str:
    if count >= 1_000_000_000:
        return f"{count / 1_000_000_000:.1f}B"
    if count >= 1_000_000:
        return f"{count / 1_000_000:.2f}M"
    if count >= 1_000:
        return f"{count / 1_000:.2f}K"
    return str(count)


class _Reader:
    def __init__(self, read: Callable[[int], bytes], limit: int) -> None:
        self._read = read
        self._buffer = b""
        self._limit = limit
        self.consumed = 0

    def take(self, size: int) -> bytes:
        if self.consumed + size > self._limit:
            raise GgufError(f"the GGUF header is larger than the {self._limit} bytes read for it")
        chunks = [self._buffer]
        have = len(self._buffer)
        while have < size:
            chunk = self._read(max(size - have, 1 << 20))
            if not chunk:
                raise GgufError("the GGUF header is truncated")
            chunks.append(chunk)
            have += len(chunk)
        data = b"".join(chunks)
        self._buffer = data[size:]
        self.consumed += size
        return data[:size]

    def unpack(self, fmt: str, size: int) -> int | float | bool:
        value: int | float | bool = struct.unpack(fmt, self.take(size))[0]
        return value

    def u32(self) -> int:
        return int(self.unpack("<I", 4))

    def u64(self) -> int:
        return int(self.unpack("<Q", 8))

    def string(self) -> bytes:
        length = self.u64()
        if length > _MAX_STRING:
            raise GgufError(f"a GGUF string claims {length} bytes")
        return self.take(length)


def read_gguf_info(read: Callable[[int], bytes], *, limit: int = 128 * 1024 * 1024) -> GgufInfo:
    """Parses the header from ``read`` (a blocking ``read(n)``), reading at most ``limit`` bytes."""
    reader = _Reader(read, limit)
    if reader.take(4) != MAGIC:
        raise GgufError("not a GGUF file (bad magic)")
    version = reader.u32()
    if version not in (2, 3):
        raise GgufError(f"unsupported GGUF version {version}")
    tensor_count = reader.u64()
    kv_count = reader.u64()
    if kv_count > 1_000_000:
        raise GgufError(f"a GGUF header claims {kv_count} metadata entries")
    metadata: dict[str, Scalar] = {}
    arrays: dict[str, int] = {}
    for _ in range(kv_count):
        key = reader.string().decode("utf-8", "replace")
        value_type = reader.u32()
        if value_type == _ARRAY:
            arrays[key] = _skip_array(reader)
        elif value_type == _STRING:
            text = reader.string()
            if len(text) <= _MAX_KEPT_STRING:
                metadata[key] = text.decode("utf-8", "replace")
        elif value_type in _SCALARS:
            fmt, size = _SCALARS[value_type]
            metadata[key] = reader.unpack(fmt, size)
        else:
            raise GgufError(f"unknown GGUF value type {value_type} for {key!r}")
    return GgufInfo(version=version, tensor_count=tensor_count, metadata=metadata, array_lengths=arrays)


def _skip_array(reader: _Reader) -> int:
    element_type = reader.u32()
    count = reader.u64()
    if element_type == _STRING:
        for _ in range(count):
            reader.string()
    elif element_type in _SCALARS:
        reader.take(_SCALARS[element_type][1] * count)
    elif element_type == _ARRAY:
        for _ in range(count):
            _skip_array(reader)
    else:
        raise GgufError(f"unknown GGUF array element type {element_type}")
    return count
