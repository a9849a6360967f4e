"""The stored form of a cached response, and its explicit binary encoding.

Layout (all integers big-endian), version 2 (text is UTF-8; header bytes that were not
UTF-8 travel as surrogate escapes, as aiohttp decodes them, and come back as the same bytes)::

    magic "SCE" | version u8 | flags u8 | payload (zlib-compressed when flags & 1)

    payload = status u16 | stored_at f64 | ttl f64 | stale_while_revalidate f64
              | stale_if_error f64 | keep_stale f64
              | header count u16 | (name u16+bytes, value u32+bytes)*
              | tag count u16 | (tag u16+bytes)* | route u16+bytes
              | vary count u16 | (name u16+bytes, value u32+bytes)* | body u32+bytes

Nothing is ever unpickled: a blob that does not parse raises ``EntryFormatError``.
"""

from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass, field, replace

from core.errors import EntryFormatError

MAGIC = b"SCE"
VERSION = 2
#: How text is written: whatever bytes a header carried survive the round trip.
_TEXT = ("utf-8", "surrogateescape")
FLAG_COMPRESSED = 1

_PREFIX = struct.Struct("!3sBB")
_FIXED = struct.Struct("!Hddddd")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

# What the objects of an entry cost beyond their text, measured with tracemalloc on CPython
# 3.11 (64-bit) and rounded up to pymalloc's 16-byte blocks: the slots object 128 (with its GC
# header), each of its five float fields 32 (fresh objects when read from L2), the int that
# caches its size 32; a str 49 + its length, a bytes 33 + its length (about 8 more on average
# once rounded, or for a malloc header above 512 bytes); a 2-tuple 64; a tuple 48 + 8 an item.
_OBJECT = 128 + 5 * 32 + 32
_STR = 56
_BYTES = 40
_PAIR = 64
_TUPLE = 48


def _tuple(items: int) -> int:
    return _TUPLE + 8 * items if items else 0  # every empty tuple is the one shared ()


@dataclass(frozen=True, slots=True, weakref_slot=True)
class CachedResponse:
    """A response as sidecache stores it: what to replay and how long it stays fresh."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float = field(default_factory=time.time)
    ttl: float = 0.0
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    #: Seconds a stale entry is kept (not served) so it can be revalidated with a
    #: conditional request instead of fetched again whole.
    keep_stale: float = 0.0
    tags: tuple[str, ...] = ()
    #: The route that stored it (purge by route scans L1 with it).
    route: str = ""
    #: For responses with ``Vary``: the request header values this variant was stored for.
    vary: tuple[tuple[str, str], ...] = ()

    #: ``size``, computed once: L1 asks for it on every store.
    _size: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        # The one write to a frozen instance, at construction; ``replace()`` constructs, so a
        # changed copy gets its own size.
        object.__setattr__(self, "_size", self._footprint())

    @property
    def size(self) -> int:
        """Approximate bytes this entry holds in memory: its body and header text plus the
        Python objects that hold them. L1's byte bound counts it."""
        return self._size

    def _footprint(self) -> int:
        pairs = len(self.headers) + len(self.vary)
        chars = len(self.route) + sum(map(len, self.tags))
        for name, value in self.headers:
            chars += len(name) + len(value)
        for name, value in self.vary:
            chars += len(name) + len(value)
        return (
            _OBJECT
            + _BYTES
            + len(self.body)
            + _STR * (2 * pairs + len(self.tags) + 1)  # + 1: the route
            + chars
            + _PAIR * pairs
            + _tuple(len(self.headers))
            + _tuple(len(self.vary))
            + _tuple(len(self.tags))
        )

    @property
    def expires_at(self) -> float:
        return self.stored_at + self.ttl

    def age(self, now: float) -> float:
        return max(0.0, now - self.stored_at)

    def is_fresh(self, now: float) -> bool:
        return now < self.expires_at

    def may_serve_while_revalidating(self, now: float) -> bool:
        """Stale, but inside its stale-while-revalidate window."""
        return now < self.expires_at + self.stale_while_revalidate

    def may_serve_on_error(self, now: float) -> bool:
        """Stale, but inside its stale-if-error window."""
        return now < self.expires_at + self.stale_if_error

    def usable_until(self) -> float:
        """The last moment any window (fresh, stale-while-revalidate, stale-if-error) allows."""
        return self.expires_at + max(
            self.stale_while_revalidate, self.stale_if_error, self.keep_stale
        )

    def with_times(self, stored_at: float, ttl: float) -> CachedResponse:
        return replace(self, stored_at=stored_at, ttl=ttl)

    def to_bytes(self, compress_above: int = 1024) -> bytes:
        parts = [
            _FIXED.pack(
                self.status,
                self.stored_at,
                self.ttl,
                self.stale_while_revalidate,
                self.stale_if_error,
                self.keep_stale,
            ),
        ]
        _pack_pairs(parts, self.headers)
        parts.append(_U16.pack(len(self.tags)))
        for tag in self.tags:
            _pack16(parts, tag.encode(*_TEXT))
        _pack16(parts, self.route.encode(*_TEXT))
        _pack_pairs(parts, self.vary)
        parts += [_U32.pack(len(self.body)), self.body]
        payload = b"".join(parts)
        flags = 0
        if len(payload) > compress_above:
            payload = zlib.compress(payload, 1)
            flags |= FLAG_COMPRESSED
        return _PREFIX.pack(MAGIC, VERSION, flags) + payload

    @classmethod
    def from_bytes(cls, blob: bytes) -> CachedResponse:
        try:
            magic, version, flags = _PREFIX.unpack_from(blob)
        except struct.error as exc:
            raise EntryFormatError("entry too short") from exc
        if magic != MAGIC:
            raise EntryFormatError("bad magic")
        if version != VERSION:
            raise EntryFormatError(f"unsupported entry version {version}")
        payload, start = bytes(blob), _PREFIX.size
        if flags & FLAG_COMPRESSED:
            payload, start = _decompress(memoryview(payload)[start:]), 0
        try:
            return _Reader(payload, start).entry()
        except (struct.error, UnicodeDecodeError, ValueError) as exc:
            raise EntryFormatError(f"corrupt entry: {exc}") from exc


def _pack16(parts: list[bytes], raw: bytes) -> None:
    parts += [_U16.pack(len(raw)), raw]


def _pack_pairs(parts: list[bytes], pairs: tuple[tuple[str, str], ...]) -> None:
    parts.append(_U16.pack(len(pairs)))
    for name, value in pairs:
        raw_value = value.encode(*_TEXT)
        _pack16(parts, name.encode(*_TEXT))
        parts += [_U32.pack(len(raw_value)), raw_value]


def _decompress(data: memoryview) -> bytes:
    # zlib.decompress() ignores bytes after the end of the stream; a decompressor reports them.
    decompressor = zlib.decompressobj()
    try:
        payload = decompressor.decompress(data)
    except zlib.error as exc:
        raise EntryFormatError("corrupt compressed entry") from exc
    if not decompressor.eof:
        raise EntryFormatError("truncated compressed entry")
    if decompressor.unused_data:
        raise EntryFormatError("trailing bytes after compressed entry")
    return payload


class _Reader:
    """Reads one payload front to back from ``start``; any overrun is a struct.error or
    ValueError. (Plain bytes and offsets: this runs on every L2 hit.)"""

    def __init__(self, data: bytes, start: int) -> None:
        self.data = data
        self.pos = start

    def _unpack(self, fmt: struct.Struct) -> tuple:
        values = fmt.unpack_from(self.data, self.pos)
        self.pos += fmt.size
        return values

    def _sized(self, length: struct.Struct) -> bytes:
        (size,) = length.unpack_from(self.data, self.pos)
        start = self.pos + length.size
        self.pos = start + size
        if self.pos > len(self.data):
            raise ValueError("truncated")
        return self.data[start : self.pos]

    def _bytes16(self) -> bytes:
        return self._sized(_U16)

    def _bytes32(self) -> bytes:
        return self._sized(_U32)

    def entry(self) -> CachedResponse:
        status, stored_at, ttl, swr, sie, keep = self._unpack(_FIXED)
        headers = self._pairs()
        tags = tuple(self._bytes16().decode(*_TEXT) for _ in range(self._unpack(_U16)[0]))
        route = self._bytes16().decode(*_TEXT)
        vary = self._pairs()
        body = self._bytes32()
        if self.pos != len(self.data):
            raise ValueError("trailing bytes")
        if not 100 <= status <= 599:
            raise ValueError(f"status {status} out of range")
        return CachedResponse(
            status, headers, body, stored_at, ttl, swr, sie, keep, tags, route, vary
        )

    def _pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple(
            (self._bytes16().decode(*_TEXT), self._bytes32().decode(*_TEXT))
            for _ in range(self._unpack(_U16)[0])
        )
