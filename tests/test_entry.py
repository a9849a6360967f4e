"""The stored entry format: what goes in comes back out, and anything else is refused."""

from __future__ import annotations

import ast
import gc
import pickle
import tracemalloc
import weakref
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.entry import FLAG_COMPRESSED, MAGIC, VERSION, CachedResponse
from core.errors import EntryFormatError

ROOT = Path(__file__).resolve().parent.parent

latin1 = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=40)
times = st.floats(allow_nan=False, min_value=0, max_value=1e10)
entries = st.builds(
    CachedResponse,
    status=st.integers(100, 599),
    headers=st.lists(st.tuples(latin1, latin1), max_size=8).map(tuple),
    body=st.binary(max_size=4096) | st.text(max_size=2000).map(lambda t: t.encode() * 3),
    stored_at=times,
    ttl=times,
    stale_while_revalidate=times,
    stale_if_error=times,
    tags=st.lists(st.text(max_size=20), max_size=4).map(tuple),
)

SAMPLE = CachedResponse(
    status=200,
    headers=(("Content-Type", "application/json"), ("X-Agent", "planner")),
    body=b'{"agent": "planner", "score": 0.93}',
    stored_at=1_700_000_000.5,
    ttl=300.0,
    tags=("agents",),
)
LARGE = CachedResponse(
    status=200,
    headers=(("Content-Type", "application/json"),),
    body=b'{"agents": [' + b'{"name": "planner", "score": 0.5},' * 5000 + b"{}]}",
    stored_at=1_700_000_000.0,
    ttl=60.0,
)


def outcome(blob: bytes) -> str:
    """How ``from_bytes`` treats ``blob``: "parsed", "EntryFormatError" or another error."""
    try:
        CachedResponse.from_bytes(blob)
    except EntryFormatError:
        return "EntryFormatError"
    except Exception as exc:
        return type(exc).__name__
    return "parsed"


# --- round trip -------------------------------------------------------------------------------


@settings(max_examples=200)
@given(entry=entries, compress_above=st.integers(0, 8192))
def test_every_entry_survives_a_round_trip(entry, compress_above):
    blob = entry.to_bytes(compress_above=compress_above)

    assert CachedResponse.from_bytes(blob) == entry


def test_blob_starts_with_magic_and_version():
    blob = SAMPLE.to_bytes()

    assert blob[:3] == MAGIC
    assert blob[3] == VERSION


def test_large_compressible_entry_is_stored_compressed():
    blob = LARGE.to_bytes(compress_above=1024)

    assert blob[4] & FLAG_COMPRESSED
    assert len(blob) < len(LARGE.body) // 10
    assert CachedResponse.from_bytes(blob) == LARGE


def test_small_entry_is_stored_uncompressed():
    blob = SAMPLE.to_bytes(compress_above=1024)

    assert not blob[4] & FLAG_COMPRESSED
    assert SAMPLE.body in blob


def test_compression_threshold_is_configurable():
    assert not LARGE.to_bytes(compress_above=10**9)[4] & FLAG_COMPRESSED


def test_header_order_and_repeats_are_kept():
    entry = CachedResponse(
        status=200,
        headers=(("Link", "<a>"), ("Vary", "Accept"), ("Link", "<b>")),
        body=b"",
    )

    assert CachedResponse.from_bytes(entry.to_bytes()).headers == entry.headers


# --- size -------------------------------------------------------------------------------------

SHAPES = {
    "json_with_8_headers": CachedResponse(
        200,
        tuple((f"X-Header-{i}", "v" * 20) for i in range(8)),
        b"{}" * 300,
        ttl=60.0,
        route="select",
    ),
    "tags_and_vary": CachedResponse(
        200,
        (("Content-Type", "application/json"), ("Vary", "Accept")),
        b"{}" * 50,
        tags=("agents", "request:abc"),
        route="select",
        vary=(("Accept", "application/json"),),
    ),
    "large_body": LARGE,
}


@pytest.mark.parametrize("entry", list(SHAPES.values()), ids=list(SHAPES))
def test_size_covers_what_a_parsed_entry_allocates(entry):
    """tracemalloc sees requested bytes; ``size`` adds the allocator's rounding, so it should
    come out a little above them, never below."""
    blob = entry.to_bytes(compress_above=10**9)
    parsed: list[CachedResponse | None] = [None] * 200
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(len(parsed)):
            parsed[i] = CachedResponse.from_bytes(blob)
        allocated = (tracemalloc.get_traced_memory()[0] - before) / len(parsed)
    finally:
        tracemalloc.stop()

    assert allocated <= entry.size <= 1.2 * allocated


def test_a_changed_copy_has_its_own_size():
    bigger = replace(SAMPLE, body=SAMPLE.body + b"x" * 1000)

    assert bigger.size == SAMPLE.size + 1000
    assert SAMPLE.with_times(0.0, 1.0).size == SAMPLE.size


def test_a_parsed_entry_equals_its_source_and_takes_weak_references():
    copy = CachedResponse.from_bytes(SAMPLE.to_bytes())

    assert copy == SAMPLE
    assert weakref.ref(copy)() is copy


# --- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize("entry", [SAMPLE, LARGE], ids=["plain", "compressed"])
def test_every_truncation_of_a_valid_blob_is_an_entry_format_error(entry):
    blob = entry.to_bytes()

    outcomes = {n: outcome(blob[:n]) for n in range(len(blob))}

    assert {n: o for n, o in outcomes.items() if o != "EntryFormatError"} == {}


def test_bad_magic_is_an_entry_format_error():
    blob = SAMPLE.to_bytes()

    with pytest.raises(EntryFormatError, match="magic"):
        CachedResponse.from_bytes(b"XYZ" + blob[3:])


@pytest.mark.parametrize("version", [0, VERSION + 1, 255])
def test_unknown_version_is_an_entry_format_error(version):
    blob = SAMPLE.to_bytes()

    with pytest.raises(EntryFormatError, match="version"):
        CachedResponse.from_bytes(blob[:3] + bytes([version]) + blob[4:])


def test_corrupted_compressed_payload_is_an_entry_format_error():
    blob = bytearray(LARGE.to_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 8] = bytes(b ^ 0xFF for b in blob[middle : middle + 8])

    assert outcome(bytes(blob)) == "EntryFormatError"


def test_uncompressed_payload_flagged_as_compressed_is_an_entry_format_error():
    blob = SAMPLE.to_bytes()

    assert outcome(blob[:4] + bytes([FLAG_COMPRESSED]) + blob[5:]) == "EntryFormatError"


def test_compressed_payload_not_flagged_is_an_entry_format_error():
    blob = LARGE.to_bytes()

    assert outcome(blob[:4] + b"\x00" + blob[5:]) == "EntryFormatError"


@pytest.mark.parametrize("entry", [SAMPLE, LARGE], ids=["plain", "compressed"])
def test_trailing_bytes_are_an_entry_format_error(entry):
    blob = entry.to_bytes()

    assert outcome(blob + b"\x00") == "EntryFormatError"


def test_compressed_payload_with_trailing_bytes_inside_is_an_entry_format_error():
    payload = zlib.decompress(LARGE.to_bytes()[5:]) + b"extra"
    blob = MAGIC + bytes([VERSION, FLAG_COMPRESSED]) + zlib.compress(payload)

    assert outcome(blob) == "EntryFormatError"


@pytest.mark.parametrize("status", [0, 99, 600, 65535])
def test_stored_status_outside_100_to_599_is_an_entry_format_error(status):
    blob = CachedResponse(status=status, headers=(), body=b"").to_bytes()

    assert outcome(blob) == "EntryFormatError"


def test_text_that_was_not_utf8_round_trips_as_the_same_bytes():
    """aiohttp keeps header bytes that are not UTF-8 as surrogate escapes; an entry gives
    them back byte for byte (a Surrogate-Key tag, a header value)."""
    odd = b"\xff\xfe".decode("utf-8", "surrogateescape")
    entry = CachedResponse(status=200, headers=(("X-Odd", odd),), body=b"", tags=(odd,))

    back = CachedResponse.from_bytes(entry.to_bytes(10**6))

    assert back.tags == (odd,)
    assert back.headers[0][1].encode("utf-8", "surrogateescape") == b"\xff\xfe"


@settings(max_examples=200)
@given(blob=st.binary(max_size=256))
def test_random_bytes_are_parsed_or_refused_with_entry_format_error(blob):
    assert outcome(blob) in ("parsed", "EntryFormatError")


@settings(max_examples=200)
@given(flags=st.integers(0, 255), payload=st.binary(max_size=256))
def test_random_payload_after_a_valid_prefix_is_parsed_or_refused(flags, payload):
    blob = MAGIC + bytes([VERSION, flags]) + payload

    assert outcome(blob) in ("parsed", "EntryFormatError")


@settings(max_examples=200)
@given(entry=entries, data=st.data())
def test_a_corrupted_byte_anywhere_is_parsed_or_refused(entry, data):
    blob = bytearray(entry.to_bytes(compress_above=data.draw(st.sampled_from([0, 10**6]))))
    position = data.draw(st.integers(0, len(blob) - 1))
    blob[position] = data.draw(st.integers(0, 255).filter(lambda b: b != blob[position]))

    assert outcome(bytes(blob)) in ("parsed", "EntryFormatError")


# --- never pickle -----------------------------------------------------------------------------

unpickled: list[str] = []


def _tripwire() -> str:
    unpickled.append("loaded")
    return "loaded"


class _Explosive:
    def __reduce__(self):
        return (_tripwire, ())


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_a_pickle_is_refused_and_never_loaded(protocol):
    unpickled.clear()
    smuggled = pickle.dumps(_Explosive(), protocol=protocol)

    results = [
        outcome(smuggled),
        outcome(MAGIC + bytes([VERSION, 0]) + smuggled),
        outcome(MAGIC + bytes([VERSION, FLAG_COMPRESSED]) + zlib.compress(smuggled)),
    ]

    assert results == ["EntryFormatError"] * 3
    assert unpickled == []


def test_no_sidecache_module_imports_a_pickle_like_module():
    forbidden = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve"}
    offenders = []
    for path in sorted([*ROOT.glob("core/**/*.py"), *ROOT.glob("proxy/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in forbidden]

    assert offenders == []
