"""The GGUF container, parsed from bytes that lie in one file or in several parts read in order.

Layout (llama.cpp's GGUF spec, versions 2 and 3, little-endian):

    "GGUF", uint32 version, uint64 tensor_count, uint64 kv_count
    kv_count x     (string key, uint32 value type, value)
    tensor_count x (string name, uint32 n_dims, uint64 ne[n_dims], uint32 ggml type, uint64 offset)
    zero padding to `general.alignment` (default 32), then the tensor data (offsets count from there)

A string is a uint64 byte count and UTF-8 bytes; an array a uint32 item type, a uint64 count and the
items. `ne` lists dimensions innermost-first, so the numpy shape is `ne` reversed.

`gguf.GGUFReader` memory-maps one path, so a model shipped as several data parts would need a joined
copy on disk. Here the bytes come from a `ByteSource`: one or more files memory-mapped in order, where a
range inside one part is a view of its map and only a range across a boundary is copied. Dequantizing
the tensor bytes stays with `gguf.quants` (see gguf_io).
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import os
import struct
from pathlib import Path
from typing import Any, Sequence

import numpy as np

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
_STRING, _ARRAY = 8, 9
# GGUF value type -> little-endian struct format of one scalar.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
            12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8",
          12: "<f8"}
_CHUNK = 1 << 20  # header bytes fetched at a time


class ByteSource:
    """Read-only bytes of one file or of several files concatenated in order (nothing joined on disk).

    `name` is how errors refer to it (the file, or what the parts make up). Each non-empty part is
    memory-mapped, so nothing is read until asked for.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], name: str | None = None):
        self.paths = tuple(Path(p) for p in paths)
        if not self.paths:
            raise ValueError("a ByteSource needs at least one file")
        self.name = name or str(self.paths[0])
        self._maps, self._starts = [], []
        size = 0
        for path in self.paths:
            n = path.stat().st_size
            self._starts.append(size)
            self._maps.append(np.memmap(path, dtype=np.uint8, mode="r") if n else np.zeros(0, np.uint8))
            size += n
        self.size = size
        self._digest: str | None = None

    def read(self, start: int, stop: int) -> np.ndarray:
        """Bytes [start, stop) as uint8 [stop - start]: a view of the map inside one part, else a copy."""
        if not 0 <= start <= stop <= self.size:
            raise EOFError(f"bytes [{start:,}, {stop:,}) lie beyond the end ({self.size:,} bytes)")
        first = bisect.bisect_right(self._starts, start) - 1
        offset = start - self._starts[first]
        if stop - self._starts[first] <= len(self._maps[first]):
            return self._maps[first][offset:offset + stop - start]
        pieces, at, index = [], start, first
        while at < stop:
            local = at - self._starts[index]
            take = min(stop - at, len(self._maps[index]) - local)
            pieces.append(self._maps[index][local:local + take])
            at += take
            index += 1
        return np.concatenate(pieces)

    def sha256(self) -> str:
        """Hex sha256 of all the bytes in order (read in 1 MiB chunks; computed once per source)."""
        if self._digest is None:
            digest = hashlib.sha256()
            for m in self._maps:
                for i in range(0, len(m), 1 << 20):
                    digest.update(m[i:i + (1 << 20)])
            self._digest = digest.hexdigest()
        return self._digest


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in the header. `offset` is absolute (from the first byte of the source)."""

    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    ne: tuple[int, ...]  # ggml dimensions, innermost first
    offset: int
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy order: `ne` reversed ([out, in] for a ggml [in, out] matrix)."""
        return tuple(reversed(self.ne))


@dataclasses.dataclass(frozen=True)
class GGUFFile:
    """A parsed GGUF header over its bytes: `fields` as Python values, `tensors` in file order."""

    source: ByteSource
    version: int
    fields: dict[str, Any]
    tensors: tuple[TensorInfo, ...]

    def tensor_bytes(self, tensor: TensorInfo) -> np.ndarray:
        """The stored bytes of `tensor`, uint8 [nbytes] (a view of the file when inside one part)."""
        return self.source.read(tensor.offset, tensor.offset + tensor.nbytes)


class _Damaged(Exception):
    """Internal: what is wrong, turned into one ValueError naming the source by `parse_gguf`."""


class _Cursor:
    """Sequential little-endian reads from a ByteSource through a buffer (headers hold ~300k strings)."""

    def __init__(self, source: ByteSource):
        self.source, self.pos, self._buf, self._buf_start = source, 0, b"", 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > self.source.size:
            raise _Damaged(f"a {n:,}-byte read at byte {self.pos:,} runs past the end")
        if end > self._buf_start + len(self._buf):
            self._buf = self.source.read(self.pos, min(self.source.size, max(end, self.pos + _CHUNK))).tobytes()
            self._buf_start = self.pos
        out = self._buf[self.pos - self._buf_start:end - self._buf_start]
        self.pos = end
        return out

    def scalar(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = self.take(self.scalar("<Q"))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Damaged(f"a string ending at byte {self.pos:,} is not UTF-8") from None

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise _Damaged(f"value type {kind} at byte {self.pos:,} is not a GGUF type")
        item, count = self.scalar("<I"), self.scalar("<Q")
        smallest = struct.calcsize(_SCALARS[item]) if item in _SCALARS else 8  # strings and arrays: >= 8 bytes
        if count * smallest > self.source.size - self.pos:
            raise _Damaged(f"an array of {count:,} items at byte {self.pos:,} is longer than the file")
        if item in _NUMPY:  # one read for numeric arrays (token types, scores)
            return np.frombuffer(self.take(count * smallest), _NUMPY[item]).tolist()
        return [self.value(item) for _ in range(count)]


def parse_gguf(source: ByteSource) -> GGUFFile:
    """The header of the GGUF in `source`, every tensor's bytes checked to lie inside it.

    Raises ValueError naming `source.name`: "not a GGUF file" (wrong magic), an unsupported version
    or byte order, or "truncated or damaged" with the byte where parsing failed.
    """
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    head = source.read(0, min(4, source.size)).tobytes()
    if head != MAGIC:
        raise ValueError(f"{source.name}: not a GGUF file (it starts with {head!r}, a GGUF starts with {MAGIC!r}); "
                         "pass a .gguf file from llama.cpp or an HF directory with config.json + *.safetensors")
    cursor = _Cursor(source)
    try:
        cursor.take(4)
        version = cursor.scalar("<I")
        if version not in SUPPORTED_VERSIONS:
            swapped = "; it looks big-endian, which is not supported" if version & 0xFFFF == 0 else ""
            raise ValueError(f"{source.name}: GGUF version {version} is not supported (versions "
                             f"{SUPPORTED_VERSIONS}){swapped}")
        n_tensors, n_fields = cursor.scalar("<Q"), cursor.scalar("<Q")
        fields: dict[str, Any] = {}
        for _ in range(n_fields):
            key = cursor.string()
            if key in fields:
                raise _Damaged(f"metadata key {key!r} appears twice")
            fields[key] = cursor.value(cursor.scalar("<I"))
        entries = []
        for _ in range(n_tensors):
            name = cursor.string()
            n_dims = cursor.scalar("<I")
            if n_dims > 8:
                raise _Damaged(f"tensor {name!r} claims {n_dims} dimensions")
            ne = tuple(cursor.scalar("<Q") for _ in range(n_dims))
            entries.append((name, ne, cursor.scalar("<I"), cursor.scalar("<Q")))
        alignment = fields.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise _Damaged(f"general.alignment={alignment!r} is not a power of two")
        data_start = -(-cursor.pos // alignment) * alignment
        tensors, seen = [], set()
        for name, ne, kind, offset in entries:
            if name in seen:
                raise _Damaged(f"tensor {name!r} appears twice")
            seen.add(name)
            try:
                kind = GGMLQuantizationType(kind)
            except ValueError:
                raise _Damaged(f"tensor {name!r} has ggml type {kind}, which gguf does not know") from None
            block, block_bytes = GGML_QUANT_SIZES[kind]
            elements = int(np.prod(ne, dtype=np.int64)) if ne else 1
            if ne and ne[0] % block:
                raise _Damaged(f"tensor {name!r}: row length {ne[0]} is not a multiple of {kind.name}'s "
                               f"block of {block}")
            nbytes = elements // block * block_bytes
            start = data_start + offset
            if start + nbytes > source.size:
                raise _Damaged(f"tensor {name!r} ends at byte {start + nbytes:,}")
            tensors.append(TensorInfo(name, kind, ne, start, nbytes))
    except _Damaged as e:
        raise ValueError(f"{source.name}: the GGUF file is truncated or damaged ({source.size:,} bytes; {e}); "
                         "download or copy it again") from None
    return GGUFFile(source=source, version=version, fields=fields, tensors=tuple(tensors))
