"""Cache keys: which requests count as the same request, and which never may."""

from __future__ import annotations

import json
import random
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from core.config import RouteConfig, SemanticRouteConfig, TenantConfig
from core.headers import Target
from core.keys import RequestKey, canonical_json, derive_key, normalise_query, tenant_partition

ROUTE = RouteConfig(name="select", path="/agents/select", ignore_fields=("request_id",))
SEMANTIC = RouteConfig(
    name="ask",
    path="/ask",
    ignore_fields=("request_id",),
    semantic=SemanticRouteConfig(field="query"),
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


def derive(
    body: bytes,
    *,
    route: RouteConfig = ROUTE,
    method: str = "POST",
    path: str | None = None,
    query: str = "",
    headers: dict[str, str] | None = None,
) -> RequestKey:
    target = Target("http", "sidecache.test", route.path if path is None else path, query)
    return derive_key(route, method, target, CIMultiDict(headers or {}), body)


def key_of(body: bytes, **request: Any) -> str:
    return derive(body, **request).key


def as_json(document: Any) -> bytes:
    return json.dumps(document).encode()


def render(value: Any, rnd: random.Random) -> str:
    """``value`` as JSON text with object keys shuffled and random whitespace between tokens."""

    def gap() -> str:
        return "".join(rnd.choice(" \t\n\r") for _ in range(rnd.randrange(3)))

    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        members = [f"{gap()}{json.dumps(k)}{gap()}:{gap()}{render(v, rnd)}" for k, v in items]
        return "{" + ",".join(members) + gap() + "}"
    if isinstance(value, list):
        return "[" + ",".join(gap() + render(v, rnd) + gap() for v in value) + "]"
    return json.dumps(value, ensure_ascii=rnd.random() < 0.5)


def typed(value: Any) -> Any:
    """A comparable form of a JSON value in which 1, 1.0, true and "1" all differ."""
    if isinstance(value, dict):
        return ("object", frozenset((k, typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("array", tuple(typed(v) for v in value))
    return (type(value).__name__, value)


def is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


# --- canonical JSON ---------------------------------------------------------------------------


@settings(max_examples=200)
@given(document=json_values, rnd=st.randoms(use_true_random=False))
def test_key_order_and_whitespace_do_not_change_the_key(document, rnd):
    reordered = render(document, rnd).encode()

    assert key_of(reordered) == key_of(as_json(document))


@settings(max_examples=200)
@given(document=json_values, rnd=st.randoms(use_true_random=False))
def test_canonical_json_is_the_same_bytes_for_any_rendering(document, rnd):
    reparsed = json.loads(render(document, rnd))

    assert canonical_json(reparsed) == canonical_json(document)


@settings(max_examples=200)
@given(a=json_values, b=json_values)
def test_different_json_documents_never_share_a_key(a, b):
    assume(typed(a) != typed(b))

    assert key_of(as_json(a)) != key_of(as_json(b))


@settings(max_examples=200)
@given(document=json_objects, name=st.text(max_size=8), a=json_values, b=json_values)
def test_changing_one_nested_value_changes_the_key(document, name, a, b):
    assume(typed(a) != typed(b))

    first = {"outer": {**document, name: a}}
    second = {"outer": {**document, name: b}}

    assert key_of(as_json(first)) != key_of(as_json(second))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1", '"1"'),
        ("1", "1.0"),
        ("1", "true"),
        ("0", "false"),
        ("null", '"null"'),
        ('{"a": null}', "{}"),
        ('{"a": 1}', '{"a": "1"}'),
        ('{"a": {"b": 1}}', '{"a": {"b": 2}}'),
        ('{"a": [1, 2]}', '{"a": [2, 1]}'),
        ('{"a": [1]}', '{"a": 1}'),
        ('{"a": {}}', '{"a": []}'),
        ('"caf\\u00e9"', '"cafe\\u0301"'),
        ('"\\u65e5\\u672c"', '"\\u65e5\\u672d"'),
        ('{"k": "a,b"}', '{"k": "a", "b": null}'),
    ],
    ids=lambda text: text,
)
def test_similar_looking_json_values_get_different_keys(a, b):
    assert key_of(a.encode()) != key_of(b.encode())


def test_escaped_and_literal_unicode_are_one_key():
    assert key_of(b'{"q": "caf\\u00e9"}') == key_of('{"q": "café"}'.encode())


# --- ignored fields ---------------------------------------------------------------------------


@settings(max_examples=200)
@given(document=json_objects, request_id=json_values)
def test_ignored_top_level_field_does_not_change_the_key(document, request_id):
    without = {k: v for k, v in document.items() if k != "request_id"}

    assert key_of(as_json({**without, "request_id": request_id})) == key_of(as_json(without))


@settings(max_examples=200)
@given(document=json_objects, a=json_values, b=json_values)
def test_ignored_nested_field_does_not_change_the_key(document, a, b):
    route = RouteConfig(name="r", path="/r", ignore_fields=("meta.trace.id",))

    first = {**document, "meta": {"trace": {"id": a, "keep": 1}}}
    second = {**document, "meta": {"trace": {"id": b, "keep": 1}}}

    assert key_of(as_json(first), route=route) == key_of(as_json(second), route=route)


def test_ignored_field_may_be_written_as_a_json_path():
    route = RouteConfig(name="r", path="/r", ignore_fields=("$.meta.id",))

    first = key_of(b'{"meta": {"id": 1}, "q": "x"}', route=route)
    second = key_of(b'{"meta": {"id": 2}, "q": "x"}', route=route)

    assert first == second


def test_ignoring_a_top_level_field_keeps_a_nested_field_of_that_name():
    first = key_of(b'{"inner": {"request_id": 1}}')
    second = key_of(b'{"inner": {"request_id": 2}}')

    assert first != second


def test_fields_not_ignored_still_change_the_key():
    first = key_of(b'{"request_id": 1, "task": "a"}')
    second = key_of(b'{"request_id": 1, "task": "b"}')

    assert first != second


# --- bodies that are not JSON -----------------------------------------------------------------

raw_bodies = st.binary(max_size=64).filter(lambda body: not is_json(body))


@settings(max_examples=200)
@given(a=raw_bodies, b=raw_bodies)
def test_different_non_json_bodies_get_different_keys(a, b):
    assume(a != b)

    assert key_of(a) != key_of(b)


@settings(max_examples=200)
@given(raw=raw_bodies, document=json_values)
def test_a_non_json_body_never_shares_a_key_with_a_json_body(raw, document):
    assert key_of(raw) != key_of(as_json(document))


def test_a_non_json_body_is_keyed_by_its_exact_bytes():
    assert key_of(b"a=1&b=2") != key_of(b"b=2&a=1")
    assert key_of(b"a=1&b=2") == key_of(b"a=1&b=2")


def test_an_empty_body_is_not_the_json_null():
    assert key_of(b"") != key_of(b"null")


def test_json_with_nan_is_keyed_by_its_bytes():
    assert key_of(b"[NaN]") != key_of(b"[ NaN]")


# --- query string -----------------------------------------------------------------------------

query_params = st.dictionaries(st.text(min_size=1, max_size=6), st.text(max_size=6), max_size=5)


@settings(max_examples=200)
@given(params=query_params, rnd=st.randoms(use_true_random=False))
def test_query_parameter_order_does_not_change_the_key(params, rnd):
    shuffled = list(params.items())
    rnd.shuffle(shuffled)

    assert key_of(b"{}", query=urlencode(shuffled)) == key_of(b"{}", query=urlencode(params))


@settings(max_examples=200)
@given(params=query_params, name=st.text(min_size=1, max_size=6), a=st.text(), b=st.text())
def test_query_parameter_values_change_the_key(params, name, a, b):
    assume(a != b)

    first = urlencode({**params, name: a})
    second = urlencode({**params, name: b})

    assert key_of(b"{}", query=first) != key_of(b"{}", query=second)


def test_order_of_a_repeated_query_parameter_changes_the_key():
    assert normalise_query("sort=name&sort=date") != normalise_query("sort=date&sort=name")


def test_query_bytes_that_are_not_utf8_keep_their_identity():
    # q=café and q=cafè as Latin-1 both decode to "caf\ufffd" if decoded as UTF-8.
    assert normalise_query("q=caf%E9") != normalise_query("q=caf%E8")


def test_a_literal_and_an_escaped_utf8_character_are_one_query():
    assert normalise_query("q=é") == normalise_query("q=%C3%A9")


def test_query_is_decoded_once():
    # "%2541" is the three characters "%41", not "A".
    assert normalise_query("x=%2541") != normalise_query("x=A")


# --- tenants ----------------------------------------------------------------------------------


@settings(max_examples=200)
@given(a=st.text(min_size=1), b=st.text(min_size=1))
def test_different_tenants_never_share_a_key(a, b):
    assume(a != b)

    first = key_of(b'{"q": 1}', headers={"Authorization": a})
    second = key_of(b'{"q": 1}', headers={"Authorization": b})

    assert first != second


def test_same_tenant_gets_the_same_key():
    first = derive(b'{"q": 1}', headers={"Authorization": "Bearer alice"})
    second = derive(b'{"q": 1}', headers={"Authorization": "Bearer alice"})

    assert first == second


def test_a_request_without_credentials_is_its_own_tenant():
    anonymous = derive(b'{"q": 1}')
    alice = derive(b'{"q": 1}', headers={"Authorization": "Bearer alice"})

    assert anonymous.tenant == "-"
    assert anonymous.key != alice.key


def test_tenant_partition_is_a_hash_not_the_credential():
    tenant = tenant_partition({"Authorization": "Bearer s3cret-token"}, ("Authorization",))

    assert "s3cret" not in tenant


def test_tenant_headers_are_configurable_per_route():
    route = RouteConfig(name="r", path="/r", tenant=TenantConfig(headers=("X-Tenant",)))

    acme = key_of(b"{}", route=route, headers={"X-Tenant": "acme", "Authorization": "a"})
    same_acme = key_of(b"{}", route=route, headers={"X-Tenant": "acme", "Authorization": "b"})
    globex = key_of(b"{}", route=route, headers={"X-Tenant": "globex", "Authorization": "a"})

    assert acme == same_acme
    assert acme != globex


def test_each_tenant_header_counts_separately():
    names = ("X-Org", "X-User")

    first = tenant_partition({"X-Org": "ab", "X-User": "c"}, names)
    second = tenant_partition({"X-Org": "a", "X-User": "bc"}, names)

    assert first != second


# --- headers, route, method, path -------------------------------------------------------------


def test_vary_headers_change_the_key():
    route = RouteConfig(name="r", path="/r", vary=("Accept-Language",))

    english = key_of(b"{}", route=route, headers={"Accept-Language": "en"})
    german = key_of(b"{}", route=route, headers={"Accept-Language": "de"})

    assert english != german


def test_accept_encoding_changes_the_key_only_when_the_route_varies_on_it():
    route = RouteConfig(name="r", path="/r", vary=("Accept-Encoding",))

    assert key_of(b"{}", headers={"Accept-Encoding": "gzip"}) == key_of(b"{}")
    assert key_of(b"{}", route=route, headers={"Accept-Encoding": "gzip"}) != key_of(
        b"{}", route=route, headers={"Accept-Encoding": "identity"}
    )


def test_headers_outside_vary_and_tenant_do_not_change_the_key():
    first = key_of(b"{}", headers={"X-Request-Id": "1", "User-Agent": "a"})
    second = key_of(b"{}", headers={"X-Request-Id": "2", "User-Agent": "b"})

    assert first == second


def test_route_name_changes_the_key():
    other = RouteConfig(name="other", path=ROUTE.path, ignore_fields=ROUTE.ignore_fields)

    assert key_of(b"{}") != key_of(b"{}", route=other)


def test_method_changes_the_key():
    assert key_of(b"{}", method="POST") != key_of(b"{}", method="PUT")


def test_path_changes_the_key():
    assert key_of(b"{}", path="/agents/select") != key_of(b"{}", path="/agents/selected")


# --- semantic routes --------------------------------------------------------------------------


def test_semantic_text_is_the_configured_fields_text():
    key = derive(b'{"query": "cheapest flight to Oslo", "k": 3}', route=SEMANTIC)

    assert key.semantic_text == "cheapest flight to Oslo"


def test_semantic_field_may_be_nested():
    route = RouteConfig(name="r", path="/r", semantic=SemanticRouteConfig(field="input.text"))

    key = derive(b'{"input": {"text": "hello"}}', route=route)

    assert key.semantic_text == "hello"


def test_routes_without_semantic_have_no_semantic_text():
    key = derive(b'{"query": "hello"}')

    assert key.semantic_text is None
    assert key.semantic_scope is None


@pytest.mark.parametrize("body", [b'{"query": 7}', b'{"query": "   "}', b"{}", b"not json"])
def test_a_request_without_usable_text_is_not_semantic(body):
    key = derive(body, route=SEMANTIC)

    assert key.semantic_text is None
    assert key.semantic_scope is None


@settings(max_examples=200)
@given(rest=json_objects, a=st.text(min_size=1), b=st.text(min_size=1))
def test_semantic_scope_ignores_the_text(rest, a, b):
    assume(a.strip() and b.strip())
    others = {k: v for k, v in rest.items() if k != "query"}

    first = derive(as_json({**others, "query": a}), route=SEMANTIC)
    second = derive(as_json({**others, "query": b}), route=SEMANTIC)

    assert first.semantic_scope == second.semantic_scope


@settings(max_examples=200)
@given(rest=json_objects, name=st.text(max_size=8), a=json_values, b=json_values)
def test_semantic_scope_changes_with_every_other_field(rest, name, a, b):
    assume(name not in ("query", "request_id"))
    assume(typed(a) != typed(b))

    first = derive(as_json({**rest, name: a, "query": "same text"}), route=SEMANTIC)
    second = derive(as_json({**rest, name: b, "query": "same text"}), route=SEMANTIC)

    assert first.semantic_scope != second.semantic_scope


def test_semantic_scope_ignores_ignored_fields():
    first = derive(b'{"query": "hi", "request_id": 1}', route=SEMANTIC)
    second = derive(b'{"query": "hi", "request_id": 2}', route=SEMANTIC)

    assert first.semantic_scope == second.semantic_scope


def test_semantic_scope_differs_between_tenants():
    alice = derive(b'{"query": "hi"}', route=SEMANTIC, headers={"Authorization": "alice"})
    bob = derive(b'{"query": "hi"}', route=SEMANTIC, headers={"Authorization": "bob"})

    assert alice.semantic_scope != bob.semantic_scope


def test_semantic_text_still_changes_the_exact_key():
    first = derive(b'{"query": "hello"}', route=SEMANTIC)
    second = derive(b'{"query": "hello!"}', route=SEMANTIC)

    assert first.key != second.key
    assert first.semantic_scope == second.semantic_scope
