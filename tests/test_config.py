"""Configuration: the YAML file becomes frozen dataclasses, and every error names its field."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from core.config import Config, config_from_dict, load_config, override
from core.errors import ConfigError

SHIPPED = Path(__file__).resolve().parent.parent / "config.yaml"
MiB = 1024**2


def route(**fields: Any) -> dict[str, Any]:
    return {"name": "select", "path": "/agents/select", **fields}


def error_of(data: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data)
    return str(caught.value)


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "sidecache.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# --- the shipped file -------------------------------------------------------------------------


def test_shipped_config_loads(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("SIDECACHE_UPSTREAM", raising=False)

    config = load_config(SHIPPED)

    assert [r.name for r in config.routes] == ["agents-select", "search"]
    assert [(r.method, r.path, r.ttl) for r in config.routes] == [
        ("POST", "/agents/select", 300.0),
        ("POST", "/search", 3600.0),
    ]
    assert config.routes[0].ignore_fields == ("request_id",)
    assert config.upstream.url == "http://127.0.0.1:8000"
    assert config.cache.l1.max_bytes == 64 * MiB
    assert config.cache.l2.url == ""
    assert config.cache.l2.timeout == 0.25
    assert config.cache.l2.compress_above == 1024


def test_shipped_config_takes_redis_and_upstream_from_the_environment(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("SIDECACHE_UPSTREAM", "http://agents:8000")

    config = load_config(SHIPPED)

    assert config.cache.l2.url == "redis://cache:6379/0"
    assert config.upstream.url == "http://agents:8000"


def test_empty_file_gives_the_defaults(tmp_path):
    config = load_config(write(tmp_path, ""))

    assert config == Config()
    assert config.server.port == 8080
    assert config.server.admin_port == 9090
    assert config.routes == ()


def test_a_route_needs_only_a_name_and_a_path():
    (only,) = config_from_dict({"routes": [route()]}).routes

    assert only.method == "POST"
    assert only.ttl == 300.0
    assert only.statuses == (200,)
    assert only.tenant.headers == ("Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key")
    assert only.semantic is None


def test_semantic_route_options_load():
    data = {"routes": [route(semantic={"field": "input.query", "threshold": 0.85})]}

    semantic = config_from_dict(data).routes[0].semantic

    assert semantic is not None
    assert (semantic.field, semantic.threshold, semantic.guard) == ("input.query", 0.85, True)


def test_config_is_immutable():
    config = config_from_dict({"routes": [route()]})

    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]


def test_a_single_value_is_accepted_where_a_list_is_expected():
    (only,) = config_from_dict({"routes": [route(ignore_fields="request_id", statuses=200)]}).routes

    assert only.ignore_fields == ("request_id",)
    assert only.statuses == (200,)


# --- durations and sizes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("1d", 86400.0),
        ("45", 45.0),
        (30, 30.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_durations_are_read_as_seconds(written, seconds):
    assert config_from_dict({"routes": [route(ttl=written)]}).routes[0].ttl == seconds


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ("64MiB", 64 * MiB),
        ("1KiB", 1024),
        ("512KB", 512_000),
        ("2MB", 2_000_000),
        ("1GiB", 1024**3),
        ("10B", 10),
        ("100", 100),
        (2048, 2048),
    ],
)
def test_sizes_are_read_as_bytes(written, size):
    config = config_from_dict({"cache": {"l1": {"max_bytes": written}}})

    assert config.cache.l1.max_bytes == size


def test_bad_duration_names_the_field():
    data = {"routes": [route(), route(name="search", path="/search", ttl="abc")]}

    assert error_of(data) == 'routes[1].ttl: expected a duration like "5m", got "abc"'


@pytest.mark.parametrize("written", ["5 minutes", "-5s", "5x", "", -1, True, [5], None])
def test_every_bad_duration_is_refused(written):
    message = error_of({"upstream": {"timeout": written}})

    assert message.startswith('upstream.timeout: expected a duration like "5m", got ')


@pytest.mark.parametrize("written", ["lots", "1.5MiB", "64mb", "-1", -1, False, [1]])
def test_bad_size_names_the_field(written):
    message = error_of({"cache": {"l1": {"max_bytes": written}}})

    assert message.startswith('cache.l1.max_bytes: expected a size like "64MiB", got ')


# --- unknown options and wrong types ----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"bogus": 1}, "bogus: unknown option"),
        ({"cache": {"l1": {"max_entrys": 5}}}, "cache.l1.max_entrys: unknown option"),
        ({"routes": [route(tll="5m")]}, "routes[0].tll: unknown option"),
        (
            {"routes": [route(semantic={"field": "q", "treshold": 1})]},
            "routes[0].semantic.treshold: unknown option",
        ),
    ],
)
def test_unknown_option_names_the_field(data, message):
    assert error_of(data) == message


def test_unknown_option_keys_of_mixed_types_are_a_config_error(tmp_path):
    # YAML 1.1 reads a bare `on:` key as the boolean true.
    path = write(tmp_path, "on: 1\nbogus: 2\n")

    with pytest.raises(ConfigError, match="unknown option"):
        load_config(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"server": {"port": "eighty"}}, 'server.port: expected an integer, got "eighty"'),
        ({"server": {"port": True}}, "server.port: expected an integer, got True"),
        ({"server": {"port": [8080]}}, "server.port: expected an integer, got [8080]"),
        ({"upstream": {"pool_size": 1.5}}, "upstream.pool_size: expected an integer, got 1.5"),
        (
            {"cache": {"l1": {"enabled": "maybe"}}},
            'cache.l1.enabled: expected true or false, got "maybe"',
        ),
        ({"cache": {"l1": {"enabled": 1}}}, "cache.l1.enabled: expected true or false, got 1"),
        ({"routes": [route(name=["a"])]}, "routes[0].name: expected a string, got ['a']"),
        (
            {"routes": [route(statuses=["ok"])]},
            'routes[0].statuses[0]: expected an integer, got "ok"',
        ),
        (
            {"routes": [route(ignore_fields={"a": 1})]},
            "routes[0].ignore_fields: expected a list, got {'a': 1}",
        ),
        ({"routes": {"name": "x"}}, "routes: expected a list, got {'name': 'x'}"),
        ({"routes": ["select"]}, 'routes[0]: expected a mapping, got "select"'),
        ({"server": 5}, "server: expected a mapping, got 5"),
        ([1, 2], "config: expected a mapping, got [1, 2]"),
    ],
)
def test_wrong_type_names_the_field(data, message):
    assert error_of(data) == message


def test_numbers_written_as_strings_are_accepted_for_integers():
    assert config_from_dict({"server": {"port": "8081"}}).server.port == 8081


# --- cross-field rules ------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["name", "path"])
def test_route_without_name_or_path_is_refused(missing):
    incomplete = {k: v for k, v in route().items() if k != missing}

    assert error_of({"routes": [incomplete]}) == f"routes[0].{missing}: required"


def test_duplicate_route_names_are_refused():
    data = {"routes": [route(), route(path="/other")]}

    assert error_of(data) == 'routes[1].name: duplicate route name "select"'


@pytest.mark.parametrize("url", ["ftp://agents", "localhost:8000", "", "agents"])
def test_upstream_url_must_be_http(url):
    message = error_of({"upstream": {"url": url}})

    assert message == f'upstream.url: expected an http(s) URL, got "{url}"'


@pytest.mark.parametrize("status", [99, 199, 600])
def test_status_outside_200_to_599_is_refused(status):
    message = error_of({"routes": [route(statuses=[200, status])]})

    assert message == f"routes[0].statuses[1]: expected a status 200-599, got {status}"


def test_route_path_must_start_with_a_slash():
    message = error_of({"routes": [route(path="agents/select")]})

    assert message == 'routes[0].path: expected a path starting with "/", got "agents/select"'


@pytest.mark.parametrize("method", ["GE T", "PSOT", "get post"])
def test_route_method_must_be_a_known_method(method):
    message = error_of({"routes": [route(method=method)]})

    assert message == (
        "routes[0].method: expected one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, "
        f'QUERY, *, got "{method}"'
    )


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/agents/%73elect", "an escape"),
        ("/search?q=*", "a query"),
        ("/search#top", "a fragment"),
    ],
)
def test_a_route_path_that_could_never_match_is_refused(path, why):
    message = error_of({"routes": [route(path=path)]})

    assert message.startswith(f'routes[0].path: "{path}" has {why}')


def test_an_empty_tenant_partition_is_refused_unless_the_route_shares_on_purpose():
    message = error_of({"routes": [route(tenant={"headers": []})]})
    shared = config_from_dict({"routes": [route(tenant={"headers": [], "shared": True})]})

    assert message.startswith("routes[0].tenant.headers: empty, so every client would share")
    assert shared.routes[0].tenant.shared


def test_tenant_cookies_need_the_cookie_header_in_the_partition():
    message = error_of({"routes": [route(tenant={"headers": ["Authorization"], "cookies": ["s"]})]})

    assert message.startswith("routes[0].tenant.cookies:")


def test_a_key_given_twice_in_the_file_is_refused(tmp_path):
    path = write(tmp_path, "upstream:\n  url: http://a:1\n  url: http://b:2\n")

    with pytest.raises(ConfigError, match="duplicate key 'url'"):
        load_config(path)


@pytest.mark.parametrize(
    ("server", "field"),
    [
        ({"header_timeout": "0s"}, "server.header_timeout"),
        ({"idle_timeout": 0}, "server.idle_timeout"),
        ({"max_connections": -1}, "server.max_connections"),
        ({"trusted_proxies": ["10.0.0.0/33"]}, "server.trusted_proxies[0]"),
        ({"trusted_proxies": ["nonsense"]}, "server.trusted_proxies[0]"),
    ],
)
def test_bad_connection_bounds_name_the_field(server, field):
    assert error_of({"server": server}).startswith(f"{field}:")


def test_l2_namespace_must_be_a_plain_name():
    assert error_of({"cache": {"l2": {"namespace": "a b"}}}).startswith("cache.l2.namespace:")


def test_l2_prefix_is_namespaced_by_the_upstream_unless_a_namespace_is_set():
    one = config_from_dict({"upstream": {"url": "http://127.0.0.1:8001"}})
    two = config_from_dict({"upstream": {"url": "http://127.0.0.1:8002"}})
    named = config_from_dict({"cache": {"l2": {"namespace": "billing"}}})

    assert one.l2_prefix != two.l2_prefix
    assert one.l2_prefix.startswith("sidecache:")
    assert named.l2_prefix == "sidecache:billing:"


def test_port_out_of_range_is_refused():
    message = error_of({"server": {"admin_port": 70000}})

    assert message == "server.admin_port: expected a port 0-65535, got 70000"


# --- files ------------------------------------------------------------------------------------


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_invalid_yaml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "routes: [\n"))


def test_file_that_is_not_utf8_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"sidecache\.yaml: not UTF-8"):
        load_config(write(tmp_path, b"server:\n  host: \xff\xfe\n"))


def test_utf8_comments_are_fine(tmp_path):
    config = load_config(write(tmp_path, "# caché → agents\nserver:\n  port: 8081\n"))

    assert config.server.port == 8081


# --- environment substitution -----------------------------------------------------------------


def test_variable_is_substituted(monkeypatch):
    monkeypatch.setenv("SIDECACHE_TEST_UPSTREAM", "http://agents:9000")

    config = config_from_dict({"upstream": {"url": "${SIDECACHE_TEST_UPSTREAM}"}})

    assert config.upstream.url == "http://agents:9000"


def test_variables_may_be_part_of_a_string(monkeypatch):
    monkeypatch.setenv("SIDECACHE_TEST_HOST", "agents")
    monkeypatch.setenv("SIDECACHE_TEST_PORT", "9000")

    config = config_from_dict(
        {"upstream": {"url": "http://${SIDECACHE_TEST_HOST}:${SIDECACHE_TEST_PORT}/v1"}}
    )

    assert config.upstream.url == "http://agents:9000/v1"


def test_default_is_used_when_variable_is_unset(monkeypatch):
    monkeypatch.delenv("SIDECACHE_TEST_UNSET", raising=False)

    config = config_from_dict({"upstream": {"url": "${SIDECACHE_TEST_UNSET:-http://fallback}"}})

    assert config.upstream.url == "http://fallback"


def test_default_is_used_when_variable_is_empty(monkeypatch):
    # As in the shell and docker compose: ":-" covers unset and empty.
    monkeypatch.setenv("SIDECACHE_TEST_EMPTY", "")

    config = config_from_dict({"upstream": {"url": "${SIDECACHE_TEST_EMPTY:-http://fallback}"}})

    assert config.upstream.url == "http://fallback"


def test_set_variable_wins_over_default(monkeypatch):
    monkeypatch.setenv("SIDECACHE_TEST_SET", "http://from-env")

    config = config_from_dict({"upstream": {"url": "${SIDECACHE_TEST_SET:-http://fallback}"}})

    assert config.upstream.url == "http://from-env"


def test_empty_default_is_allowed(monkeypatch):
    monkeypatch.delenv("SIDECACHE_TEST_UNSET", raising=False)

    config = config_from_dict({"cache": {"l2": {"url": "${SIDECACHE_TEST_UNSET:-}"}}})

    assert config.cache.l2.url == ""


def test_substituted_values_are_converted_to_the_fields_type(monkeypatch):
    monkeypatch.setenv("SIDECACHE_TEST_PORT", "8181")
    monkeypatch.setenv("SIDECACHE_TEST_TTL", "90s")
    monkeypatch.setenv("SIDECACHE_TEST_ENABLED", "false")

    config = config_from_dict(
        {
            "server": {"port": "${SIDECACHE_TEST_PORT}"},
            "cache": {"l1": {"enabled": "${SIDECACHE_TEST_ENABLED}"}},
            "routes": [route(ttl="${SIDECACHE_TEST_TTL}")],
        }
    )

    assert config.server.port == 8181
    assert config.cache.l1.enabled is False
    assert config.routes[0].ttl == 90.0


def test_unset_variable_without_default_names_the_field(monkeypatch):
    monkeypatch.delenv("SIDECACHE_TEST_UNSET", raising=False)

    message = error_of({"routes": [route(path="${SIDECACHE_TEST_UNSET}")]})

    assert message == "routes[0].path: environment variable SIDECACHE_TEST_UNSET is not set"


def test_substituted_value_is_validated_like_a_written_one(monkeypatch):
    monkeypatch.setenv("SIDECACHE_TEST_TTL", "soon")

    message = error_of({"routes": [route(ttl="${SIDECACHE_TEST_TTL}")]})

    assert message == 'routes[0].ttl: expected a duration like "5m", got "soon"'


# --- command-line overrides -------------------------------------------------------------------


def test_override_replaces_the_deployment_knobs():
    base = config_from_dict({"cache": {"l2": {"url": "redis://cache:6379"}}})

    config = override(
        base,
        **{
            "upstream.url": "http://agents:9000",
            "server.host": "127.0.0.1",
            "server.port": 18080,
            "server.admin_port": 19090,
            "cache.l2.url": "",
            "logging.level": "DEBUG",
        },
    )

    assert config.upstream.url == "http://agents:9000"
    assert (config.server.host, config.server.port, config.server.admin_port) == (
        "127.0.0.1",
        18080,
        19090,
    )
    assert config.cache.l2.url == ""
    assert config.logging.level == "DEBUG"


def test_override_with_none_keeps_the_file_value():
    base = config_from_dict({"server": {"port": 8181}})

    assert override(base, **{"server.port": None}) == base


def test_override_leaves_the_original_untouched():
    base = config_from_dict({"server": {"port": 8181}})

    override(base, **{"server.port": 9999})

    assert base.server.port == 8181


def test_override_keeps_the_other_fields_of_a_section():
    base = config_from_dict({"upstream": {"url": "http://a", "timeout": "3s"}})

    config = override(base, **{"upstream.url": "http://b"})

    assert config.upstream.timeout == 3.0


def test_override_is_validated_like_the_file():
    with pytest.raises(ConfigError, match=r"^upstream\.url: expected an http\(s\) URL"):
        override(Config(), **{"upstream.url": "agents:8000"})


def test_override_with_port_out_of_range_is_refused():
    with pytest.raises(ConfigError, match=r"^server\.port: expected a port 0-65535"):
        override(Config(), **{"server.port": 70000})


def test_an_mcp_route_takes_its_settings_and_refuses_a_get_only_method():
    route = {"name": "mcp", "path": "/mcp", "method": "*", "mode": "mcp"}
    settings = {"legacy_ttl": "30s", "cache_tools": ["list_agents"]}
    config = config_from_dict({"routes": [{**route, "max_ttl": "10m", "mcp": settings}]})
    assert config.routes[0].max_ttl == 600.0
    assert config.routes[0].mcp.legacy_ttl == 30.0
    assert config.routes[0].mcp.cache_tools == ("list_agents",)
    with pytest.raises(ConfigError, match=r'routes\[0\]\.method: mode "mcp"'):
        config_from_dict({"routes": [{**route, "method": "GET"}]})
    with pytest.raises(ConfigError, match=r"routes\[0\]\.mcp\.legacy_ttl: expected a duration"):
        config_from_dict({"routes": [{**route, "mcp": {"legacy_ttl": "soon"}}]})


@pytest.mark.parametrize("method", ["GET", "*"])
def test_an_http_route_caches_get_or_is_a_catch_all(method):
    config = config_from_dict({"routes": [route(method=method, mode="http", path="/**")]})
    assert config.routes[0].method == method


def test_an_http_route_refuses_a_method_it_cannot_cache():
    message = error_of({"routes": [route(method="POST", mode="http")]})
    assert message == (
        'routes[0].method: mode "http" caches GET (and HEAD): expected "GET" or "*", got "POST"'
    )


def test_a_route_may_name_a_list_of_methods():
    config = config_from_dict({"routes": [route(method=["get", "HEAD", "POST"], mode="http")]})
    assert config.routes[0].method == ("get", "HEAD", "POST")
    assert config.routes[0].methods == ("GET", "HEAD", "POST")
    assert config_from_dict({"routes": [route(method=["PUT", "POST"])]}).routes[0].methods == (
        "PUT",
        "POST",
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"method": ["GET", "PSOT"]},
            "routes[0].method[1]: expected one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, "
            'QUERY, *, got "PSOT"',
            id="unknown-member",
        ),
        pytest.param(
            {"method": ["GET", "*"]},
            'routes[0].method[1]: "*" means any method: give it alone, not in a list',
            id="star-in-a-list",
        ),
        pytest.param(
            {"method": ["GET", "get"]},
            'routes[0].method[1]: "get" is listed twice',
            id="twice",
        ),
        pytest.param(
            {"method": []},
            'routes[0].method: expected a method or a list of methods like "GET", got []',
            id="empty",
        ),
        pytest.param(
            {"method": ["GET", 7]},
            "routes[0].method: expected a method or a list of methods like \"GET\", got ['GET', 7]",
            id="not-strings",
        ),
        pytest.param(
            {"method": ["POST", "PUT"], "mode": "http"},
            'routes[0].method: mode "http" caches GET (and HEAD): expected a list with GET, '
            "got [POST, PUT]",
            id="http-list-without-get",
        ),
        pytest.param(
            {"method": ["GET", "POST"], "mode": "mcp"},
            'routes[0].method: mode "mcp" expects "*" or POST, got [GET, POST]',
            id="mcp-list",
        ),
    ],
)
def test_a_list_of_methods_is_checked_member_by_member(fields, expected):
    assert error_of({"routes": [route(**fields)]}) == expected


def test_http_knobs_are_durations_and_field_names():
    config = config_from_dict(
        {"routes": [route(method="*", mode="http", max_ttl="2h", keep="10m", targeted=["X-CC"])]}
    )
    assert (config.routes[0].max_ttl, config.routes[0].keep) == (7200.0, 600.0)
    assert config.routes[0].targeted == ("X-CC",)
    message = error_of({"routes": [route(mode="http", method="GET", targeted=["bad name"])]})
    assert message == 'routes[0].targeted[0]: expected a field name, got "bad name"'
