"""Configuration: one YAML file, loaded into frozen dataclasses and validated at load.

Every error names the field it is about, e.g.
``routes[1].ttl: expected a duration like "5m", got "abc"``.
Strings may use ``${VAR}`` or ``${VAR:-default}``; an unset variable without a default is an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from core.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def parse_duration(value: Any) -> float:
    """``"500ms"``, ``"5m"``, ``"1h"`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(value: Any) -> int:
    """``"64MiB"``, ``"512KB"`` or a number of bytes → bytes."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        if value < 0:
            raise ValueError
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def parse_methods(value: Any) -> str | tuple[str, ...]:
    """A route's ``method``: one method (or ``*``) as a string, or a non-empty list of
    methods (each checked against ``ROUTE_METHODS`` with the other cross-field rules)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError


def _duration(default: float) -> Any:
    return field(
        default=default, metadata={"parse": parse_duration, "expect": 'a duration like "5m"'}
    )


def _size(default: int) -> Any:
    return field(default=default, metadata={"parse": parse_size, "expect": 'a size like "64MiB"'})


# --- the schema -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """Where the proxy and admin ports listen."""

    host: str = "0.0.0.0"
    port: int = 8080
    admin_host: str = "0.0.0.0"
    admin_port: int = 9090
    workers: int = 1
    #: After SIGTERM: keep serving (``/readyz`` already 503) this long, so the endpoint
    #: removal reaches every client, then stop accepting connections...
    drain_delay: float = _duration(5.0)
    #: ...and give in-flight requests and background refreshes this long to finish.
    drain_timeout: float = _duration(20.0)
    #: A request head must arrive whole within this long of its first byte.
    header_timeout: float = _duration(10.0)
    #: A keep-alive connection with no request under way is closed after this long.
    idle_timeout: float = _duration(75.0)
    #: A request body must arrive within this long: whole for a cacheable route (it is
    #: buffered), and with no longer pause than this between reads when streamed.
    body_timeout: float = _duration(30.0)
    #: Client connections open at once; further ones get a 503 and are closed, while the
    #: open ones keep working. 0: three quarters of the open-files soft limit.
    max_connections: int = 0
    #: Peers (addresses or CIDR networks) whose ``X-Forwarded-Proto`` / ``X-Forwarded-Host``
    #: are believed. Anyone else's are replaced by what sidecache itself received.
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpstreamConfig:
    """The agent service behind the proxy and the pooled connection to it."""

    url: str = "http://127.0.0.1:8000"
    connect_timeout: float = _duration(2.0)
    timeout: float = _duration(30.0)
    pool_size: int = 100
    #: An idle pooled connection is closed after this long: below the 5 s after which
    #: common app servers (uvicorn, gunicorn) close theirs, so the proxy rarely reuses a
    #: connection the service is closing.
    keepalive_timeout: float = _duration(4.0)
    #: Upstream requests in flight at once, over all routes (load shedding; 0 = no bound).
    max_concurrency: int = 256
    #: How long a request may wait for an upstream slot before it is shed with a 503.
    queue_timeout: float = _duration(1.0)


@dataclass(frozen=True)
class BreakerConfig:
    """Circuit breaker of a remote tier: opens after ``failures`` in a row, probes after
    ``open_for``."""

    failures: int = 3
    open_for: float = _duration(5.0)


@dataclass(frozen=True)
class L1Config:
    """In-process LRU + TTL cache, bounded by entries and bytes."""

    enabled: bool = True
    max_entries: int = 10_000
    max_bytes: int = _size(64 * 1024**2)


@dataclass(frozen=True)
class L2Config:
    """Redis tier shared by every replica; empty ``url`` disables it."""

    url: str = ""
    key_prefix: str = "sidecache:"
    #: Which service's entries these are: every Redis key and the pub/sub channel live
    #: under ``key_prefix`` + namespace. Empty: derived from ``upstream.url``. Sidecars in
    #: front of *different* services at the same URL (e.g. each pod's localhost:8000) that
    #: share one Redis must each set their own.
    namespace: str = ""
    timeout: float = _duration(0.25)
    compress_above: int = _size(1024)
    #: Redis Cluster client (also chosen by a ``redis+cluster://`` URL).
    cluster: bool = False
    #: Invalidations travel on this pub/sub channel (under ``key_prefix``). A replica whose
    #: subscription has not answered a ping for two ``check_interval``s drops its L1 and
    #: stops using L1 until it is subscribed again: that bounds how long it can serve an
    #: entry purged elsewhere.
    channel: str = "invalidations"
    check_interval: float = _duration(1.0)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)


@dataclass(frozen=True)
class EmbedderConfig:
    """Which model turns query text into vectors: ``wordllama`` (offline) or ``openai``
    (any OpenAI-compatible ``/v1/embeddings`` endpoint)."""

    kind: str = "wordllama"
    url: str = ""
    model: str = ""
    api_key_env: str = "SIDECACHE_EMBEDDER_API_KEY"
    timeout: float = _duration(0.5)
    memo_size: int = 10_000
    #: Vector size; 0 means "learn it from the first answer" (openai) or the model's own.
    dim: int = 0


@dataclass(frozen=True)
class SemanticStoreConfig:
    """PostgreSQL + pgvector store of the semantic tier; empty ``dsn`` disables it."""

    dsn: str = ""
    table: str = "sidecache_semantic"
    pool_min: int = 1
    pool_max: int = 10
    connect_timeout: float = _duration(2.0)
    command_timeout: float = _duration(0.5)
    statement_cache_size: int = 100
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64
    hnsw_ef_search: int = 40
    #: Nearest rows fetched per lookup; the guard may reject the first and accept the next.
    candidates: int = 3
    cleanup_interval: float = _duration(60.0)
    cleanup_batch: int = 1000
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)


@dataclass(frozen=True)
class CacheConfig:
    """The cache tiers."""

    l1: L1Config = field(default_factory=L1Config)
    l2: L2Config = field(default_factory=L2Config)
    semantic: SemanticStoreConfig = field(default_factory=SemanticStoreConfig)


@dataclass(frozen=True)
class TenantConfig:
    """Which request headers partition the cache between tenants (hashed into every key,
    every value of each, repeated headers included). By default every credential a request
    can carry: two clients share an entry only if they send the same credentials."""

    headers: tuple[str, ...] = ("Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key")
    #: Narrow ``Cookie`` to these cookie names (e.g. ``[session]``); empty: the whole header.
    cookies: tuple[str, ...] = ()
    #: Share entries across tenants on purpose (public answers): no partition at all.
    shared: bool = False


@dataclass(frozen=True)
class SemanticRouteConfig:
    """Opt-in semantic matching for a route: ``field`` is the JSON path of the query text."""

    field: str
    #: Cosine similarity a candidate needs before the precision guard looks at it. Tuned
    #: with bench/semantic_eval.py for the wordllama embedder; the guard does the rest.
    threshold: float = 0.55
    guard: bool = True


@dataclass(frozen=True)
class McpRouteConfig:
    """A ``mode: mcp`` route's settings (see ``core.mcp``)."""

    #: Revisions before 2026-07-28 (no cache hints): list results are kept this long, per
    #: tenant (0: not cached).
    legacy_ttl: float = _duration(0.0)
    #: Tools whose ``tools/call`` results are kept (per tenant, for the route's ``ttl``);
    #: none by default, and never an error or ``isError`` result.
    cache_tools: tuple[str, ...] = ()


@dataclass(frozen=True)
class RouteConfig:
    """One cacheable route: which requests it matches and how their answers are cached."""

    name: str
    path: str
    #: One method, ``*`` (any), or a list of methods (``[GET, HEAD, POST]``).
    method: str | tuple[str, ...] = field(
        default="POST",
        metadata={"parse": parse_methods, "expect": 'a method or a list of methods like "GET"'},
    )
    ttl: float = _duration(300.0)
    statuses: tuple[int, ...] = (200,)
    max_entry_size: int = _size(1024**2)
    max_body_size: int = _size(64 * 1024)
    ignore_fields: tuple[str, ...] = ()
    vary: tuple[str, ...] = ()
    tenant: TenantConfig = field(default_factory=TenantConfig)
    semantic: SemanticRouteConfig | None = None
    #: Past its TTL, an entry is still answered for this long while one background
    #: request refreshes it (the upstream's own ``stale-while-revalidate=N`` also counts).
    stale_while_revalidate: float = _duration(0.0)
    #: Past its TTL, an entry is answered for this long when the upstream fails
    #: (unreachable, timeout, 5xx); the upstream's ``stale-if-error=N`` also counts.
    stale_if_error: float = _duration(0.0)
    #: Refresh a hot entry in the background during the last ``refresh_ahead`` of its TTL,
    #: with a probability rising to 1 at expiry (0 = off).
    refresh_ahead: float = _duration(0.0)
    #: Upstream requests in flight at once for this route (0 = only the overall bound).
    max_concurrency: int = 0
    #: ``json``: keyed by the JSON body, fresh for ``ttl`` (agent selection, search).
    #: ``http``: a shared HTTP cache by RFC 9111 (``method`` GET, ``*`` or a list with GET:
    #: GET and HEAD are cached, other methods passed through). ``ttl`` and ``statuses``
    #: are json-mode only; ``keep`` and ``targeted`` below are http-mode only.
    #: ``mcp``: an MCP endpoint, cached by MCP's own rules (``mcp`` holds its settings).
    #: ``openai``: OpenAI-compatible completions and embeddings (see ``core.llm``).
    mode: str = "json"
    #: http and mcp: the longest an answer stays fresh, whatever the upstream says (in http
    #: mode also the cap of the heuristic freshness, 10 % of the ``Last-Modified`` age). No
    #: freshness is made up.
    max_ttl: float = _duration(86400.0)
    #: http: how long a stale entry is kept past its freshness: to be revalidated with a
    #: conditional request, or answered (where its directives allow) while the upstream
    #: cannot be reached.
    keep: float = _duration(3600.0)
    #: http: targeted cache-control fields honoured (RFC 9213), first present one wins
    #: over ``Cache-Control``; empty: none.
    targeted: tuple[str, ...] = ("CDN-Cache-Control",)
    mcp: McpRouteConfig = field(default_factory=McpRouteConfig)
    #: ``openai`` mode: also cache sampled completions (``temperature`` above 0 without a
    #: ``seed``, or ``n`` above 1), which the model would answer differently each time.
    sampled: bool = False

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods the route names, upper-cased (``("*",)``: any method)."""
        listed = (self.method,) if isinstance(self.method, str) else self.method
        return tuple(method.upper() for method in listed)


@dataclass(frozen=True)
class AdminConfig:
    """The admin port's own settings."""

    token_env: str = "SIDECACHE_ADMIN_TOKEN"


@dataclass(frozen=True)
class LoggingConfig:
    """Log level and the optional access log."""

    level: str = "INFO"
    access_log: bool = False


@dataclass(frozen=True)
class AlertThresholds:
    """Levels past which the system monitor logs one alert line (and one when it recovers).
    Ratios are 0-1: host CPU of all cores, host memory used, open fds of the soft limit, disk
    used, failed upstream calls per request."""

    health_score: float = 50.0
    cpu: float = 0.9
    memory: float = 0.9
    open_fds: float = 0.8
    disk: float = 0.9
    error_rate: float = 0.05


@dataclass(frozen=True)
class MonitorConfig:
    """psutil system monitor and health score. Error rate and p99 latency are measured over
    the last ``window``; ``latency_objective`` is the p99 the proxy should stay under."""

    enabled: bool = True
    interval: float = _duration(5.0)
    window: float = _duration(60.0)
    latency_objective: float = _duration(0.5)
    disk_path: str = "/"
    thresholds: AlertThresholds = field(default_factory=AlertThresholds)


@dataclass(frozen=True)
class Config:
    """The whole sidecache configuration."""

    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    routes: tuple[RouteConfig, ...] = ()
    admin: AdminConfig = field(default_factory=AdminConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    def route(self, name: str) -> RouteConfig | None:
        return next((r for r in self.routes if r.name == name), None)

    @property
    def l2_prefix(self) -> str:
        """Where this service's keys (and its invalidation channel) live in Redis."""
        l2 = self.cache.l2
        return f"{l2.key_prefix}{l2.namespace or upstream_identity(self.upstream.url)}:"


def upstream_identity(url: str) -> str:
    """A short stable name for the service at ``url`` (scheme, host and port)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    identity = f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"
    return hashlib.blake2b(identity.encode(), digest_size=6).hexdigest()


# --- loading ----------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, substitute and validate a YAML config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    return config_from_dict(data or {})


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (the plain loader
    keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def config_from_dict(data: Any) -> Config:
    """Validate an already parsed mapping (after ``${ENV}`` substitution)."""
    config = _build(Config, _substitute(data, ""), "")
    _check(config)
    return config


def override(config: Config, **changes: Any) -> Config:
    """Apply command-line overrides given as dotted paths, e.g. ``{"upstream.url": ...}``."""
    for dotted, value in changes.items():
        if value is None:
            continue
        config = _replace_path(config, dotted.split("."), value)
    _check(config)
    return config


def _replace_path(obj: Any, parts: list[str], value: Any) -> Any:
    head, rest = parts[0], parts[1:]
    new = _replace_path(getattr(obj, head), rest, value) if rest else value
    return dataclasses.replace(obj, **{head: new})


def _substitute(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, _join(where, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if default is not None and not value:
            return default  # as in the shell: ":-" covers unset and empty
        if value is None:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return value

    return _ENV.sub(replace, value)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)  # YAML keys may be bools or numbers
    if unknown:
        raise ConfigError(f"{_join(where, str(unknown[0]))}: unknown option")
    values = {}
    for name, spec in fields.items():
        path = _join(where, name)
        if name in data:
            values[name] = _convert(hints[name], spec, data[name], path)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path}: required")
    return cls(**values)


def _convert(hint: Any, spec: dataclasses.Field, value: Any, where: str) -> Any:
    parse = spec.metadata.get("parse")
    if parse is not None:
        try:
            return parse(value)
        except (ValueError, TypeError):
            expect = spec.metadata["expect"]
            raise ConfigError(f"{where}: expected {expect}, got {_show(value)}") from None
    return _convert_type(hint, value, where)


def _convert_type(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if isinstance(value, str | int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        return tuple(_convert_type(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        return _convert_type(inner, value, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true or false, got {_show(value)}")
    if hint in (int, float):
        try:
            if isinstance(value, bool):
                raise ValueError
            if hint is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return hint(value)
        except (ValueError, TypeError):
            kind = "an integer" if hint is int else "a number"
            raise ConfigError(f"{where}: expected {kind}, got {_show(value)}") from None
    if hint is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {_show(value)}")
    raise TypeError(f"unsupported config type {hint!r} at {where}")


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _check(config: Config) -> None:
    """Cross-field rules that a field's type cannot express."""
    if not config.upstream.url.startswith(("http://", "https://")):
        raise ConfigError(f'upstream.url: expected an http(s) URL, got "{config.upstream.url}"')
    names = set()
    for i, route in enumerate(config.routes):
        where = f"routes[{i}]"
        if route.name in names:
            raise ConfigError(f'{where}.name: duplicate route name "{route.name}"')
        names.add(route.name)
        _check_route_path(route.path, f"{where}.path")
        _check_methods(route, f"{where}.method")
        _check_tenant(route.tenant, f"{where}.tenant")
        _check_mode(route, where)
        for j, status in enumerate(route.statuses):
            if not 200 <= status <= 599:
                raise ConfigError(f"{where}.statuses[{j}]: expected a status 200-599, got {status}")
    for name in ("port", "admin_port"):
        port = getattr(config.server, name)
        if not 0 <= port <= 65535:
            raise ConfigError(f"server.{name}: expected a port 0-65535, got {port}")
    if config.server.workers < 1:
        raise ConfigError(f"server.workers: expected at least 1, got {config.server.workers}")
    if config.server.workers > 1 and config.cache.l1.enabled and not config.cache.l2.url:
        raise ConfigError(
            "server.workers: more than one worker needs cache.l2.url (Redis carries purges "
            "to every worker's L1), or cache.l1.enabled: false"
        )
    if config.cache.l1.max_entries < 1:
        raise ConfigError("cache.l1.max_entries: expected at least 1")
    _check_server(config.server)
    _check_namespace(config.cache.l2.namespace)
    _check_embedder(config.cache.semantic.embedder)
    _check_monitor(config.monitor)
    _check_logging(config.logging)


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ROUTE_MODES = ("json", "http", "mcp", "openai")
#: Methods a route may name ("*": any).
ROUTE_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "QUERY", "*")
EMBEDDER_KINDS = ("wordllama", "openai")
WORDLLAMA_DIM = 256
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_FIELD_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def _check_methods(route: RouteConfig, where: str) -> None:
    """One known method or ``*``; or a list of known methods, each once (``*`` stands
    alone: a list with it would mean any method anyway)."""
    known = ", ".join(ROUTE_METHODS)
    if isinstance(route.method, str):
        if route.method.upper() not in ROUTE_METHODS:
            raise ConfigError(f'{where}: expected one of {known}, got "{route.method}"')
        return
    seen: set[str] = set()
    for i, method in enumerate(route.method):
        upper = method.upper()
        if upper == "*":
            raise ConfigError(f'{where}[{i}]: "*" means any method: give it alone, not in a list')
        if upper not in ROUTE_METHODS:
            raise ConfigError(f'{where}[{i}]: expected one of {known}, got "{method}"')
        if upper in seen:
            raise ConfigError(f'{where}[{i}]: "{method}" is listed twice')
        seen.add(upper)


def _show_methods(method: str | tuple[str, ...]) -> str:
    return f'"{method}"' if isinstance(method, str) else f"[{', '.join(method)}]"


def _check_route_path(path: str, where: str) -> None:
    """A route path is matched against the request's decoded path, without its query: one
    with an escape, a query, a fragment or white space could never match."""
    if not path.startswith("/"):
        raise ConfigError(f'{where}: expected a path starting with "/", got "{path}"')
    for char, what in (("%", "an escape"), ("?", "a query"), ("#", "a fragment")):
        if char in path:
            raise ConfigError(
                f'{where}: "{path}" has {what} ("{char}") and would never match; '
                "routes match the decoded path without its query"
            )
    if any(c.isspace() for c in path):
        raise ConfigError(f'{where}: "{path}" has white space and would never match')


def _check_mode(route: RouteConfig, where: str) -> None:
    """The mode exists, takes the route's method, and the mode-only options are used only
    with their mode."""
    if route.mode not in ROUTE_MODES:
        modes = ", ".join(f'"{mode}"' for mode in ROUTE_MODES)
        raise ConfigError(f'{where}.mode: expected one of {modes}, got "{route.mode}"')
    if route.mode == "http" and not {"GET", "*"} & set(route.methods):
        expected = '"GET" or "*"' if isinstance(route.method, str) else "a list with GET"
        raise ConfigError(
            f'{where}.method: mode "http" caches GET (and HEAD): expected {expected}, '
            f"got {_show_methods(route.method)}"
        )
    for j, name in enumerate(route.targeted):
        if not _FIELD_NAME.match(name):
            raise ConfigError(f'{where}.targeted[{j}]: expected a field name, got "{name}"')
    if route.mode == "mcp":
        _check_mcp_route(route, where)
    if route.mode == "openai" and route.methods != ("POST",):
        shown = _show_methods(route.method)
        raise ConfigError(f'{where}.method: mode "openai" caches POST, got {shown}')
    if route.sampled and route.mode != "openai":
        raise ConfigError(f'{where}.sampled: only for mode "openai", got mode "{route.mode}"')


def _check_mcp_route(route: RouteConfig, where: str) -> None:
    """An MCP endpoint takes POSTs (and, before 2026-07-28, GET streams and DELETEs)."""
    if route.methods not in (("POST",), ("*",)):
        shown = _show_methods(route.method)
        raise ConfigError(f'{where}.method: mode "mcp" expects "*" or POST, got {shown}')
    if route.semantic is not None:
        raise ConfigError(f'{where}.semantic: not available with mode "mcp"')
    for i, name in enumerate(route.mcp.cache_tools):
        if not name.strip():
            raise ConfigError(f"{where}.mcp.cache_tools[{i}]: expected a tool name")


def _check_tenant(tenant: TenantConfig, where: str) -> None:
    if not tenant.headers and not tenant.shared:
        raise ConfigError(
            f"{where}.headers: empty, so every client would share every entry; list the "
            "headers that identify a tenant, or set tenant.shared: true to share on purpose"
        )
    if tenant.cookies and "cookie" not in {name.lower() for name in tenant.headers}:
        raise ConfigError(f"{where}.cookies: names cookies, but Cookie is not in tenant.headers")


def _check_server(server: ServerConfig) -> None:
    for name in ("header_timeout", "idle_timeout", "body_timeout"):
        if getattr(server, name) <= 0:
            raise ConfigError(f"server.{name}: expected a duration above 0")
    if server.max_connections < 0:
        raise ConfigError(
            f"server.max_connections: expected 0 (automatic) or more, got {server.max_connections}"
        )
    for i, peer in enumerate(server.trusted_proxies):
        try:
            ipaddress.ip_network(peer, strict=False)
        except ValueError:
            raise ConfigError(
                f'server.trusted_proxies[{i}]: expected an address or CIDR network, got "{peer}"'
            ) from None


def _check_namespace(namespace: str) -> None:
    if namespace and not _NAMESPACE.match(namespace):
        expect = "1-64 letters, digits, '.', '_' or '-'"
        raise ConfigError(f'cache.l2.namespace: expected {expect}, got "{namespace}"')


def _check_embedder(embedder: EmbedderConfig) -> None:
    where = "cache.semantic.embedder"
    if embedder.kind not in EMBEDDER_KINDS:
        kinds = " or ".join(f'"{kind}"' for kind in EMBEDDER_KINDS)
        raise ConfigError(f'{where}.kind: expected {kinds}, got "{embedder.kind}"')
    if embedder.kind == "wordllama" and not 0 <= embedder.dim <= WORDLLAMA_DIM:
        raise ConfigError(
            f"{where}.dim: expected 1-{WORDLLAMA_DIM} for wordllama, got {embedder.dim}"
        )
    if embedder.kind == "openai":
        if not embedder.url.startswith(("http://", "https://")):
            raise ConfigError(f'{where}.url: expected an http(s) URL, got "{embedder.url}"')
        if not embedder.model:
            raise ConfigError(f"{where}.model: required for the openai embedder")


def _check_logging(settings: LoggingConfig) -> None:
    if settings.level.upper() not in _LOG_LEVELS:
        levels = ", ".join(_LOG_LEVELS)
        raise ConfigError(f'logging.level: expected one of {levels}, got "{settings.level}"')


def _check_monitor(monitor: MonitorConfig) -> None:
    for name in ("interval", "window", "latency_objective"):
        if getattr(monitor, name) <= 0:
            raise ConfigError(f"monitor.{name}: expected a duration above 0")
    limits = monitor.thresholds
    if not 0 <= limits.health_score <= 100:
        raise ConfigError(
            f"monitor.thresholds.health_score: expected 0-100, got {limits.health_score}"
        )
    for name in ("cpu", "memory", "open_fds", "disk", "error_rate"):
        value = getattr(limits, name)
        if not 0 < value <= 1:
            raise ConfigError(f"monitor.thresholds.{name}: expected a ratio in (0, 1], got {value}")
