"""Structured logs: JSON lines at the configured level, and the optional access log."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest

from core.config import LoggingConfig
from core.logs import ACCESS_LOGGER, access_enabled, access_line, setup_logging


@pytest.fixture
def logs() -> Iterator[Callable[[LoggingConfig], io.StringIO]]:
    """``setup_logging`` into a buffer; the root and access loggers are restored after."""
    root = logging.getLogger()
    access = logging.getLogger(ACCESS_LOGGER)
    saved = (list(root.handlers), root.level, access.level)

    def setup(config: LoggingConfig) -> io.StringIO:
        stream = io.StringIO()
        setup_logging(config, stream)
        return stream

    yield setup
    handlers, level, access_level = saved
    root.handlers[:] = handlers
    root.setLevel(level)
    access.setLevel(access_level)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_one_json_object_with_extra_fields(logs):
    stream = logs(LoggingConfig(level="INFO"))

    logging.getLogger("sidecache.test").info("hello %s", "there", extra={"route": "select"})

    (line,) = lines(stream)
    assert line["message"] == "hello there"
    assert line["level"] == "INFO"
    assert line["logger"] == "sidecache.test"
    assert line["route"] == "select"
    assert line["time"].endswith("Z")


def test_level_from_config_filters_lines(logs):
    stream = logs(LoggingConfig(level="warning"))

    logging.getLogger("sidecache.test").info("quiet")
    logging.getLogger("sidecache.test").warning("loud")

    assert [line["message"] for line in lines(stream)] == ["loud"]


def test_exceptions_are_logged_inside_the_json_line(logs):
    stream = logs(LoggingConfig())

    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("sidecache.test").exception("failed")

    (line,) = lines(stream)
    assert "ValueError: boom" in line["exception"]


def test_access_line_has_route_cache_status_and_durations(logs):
    stream = logs(LoggingConfig(level="WARNING", access_log=True))

    access_line(
        method="POST",
        path="/agents/select",
        route="select",
        cache="hit",
        status=200,
        duration=0.0012345,
        upstream_duration=None,
    )

    (line,) = lines(stream)
    assert access_enabled()
    assert line["logger"] == ACCESS_LOGGER
    assert line["event"] == "access"
    assert (line["route"], line["cache"], line["status"]) == ("select", "hit", 200)
    assert line["duration_ms"] == 1.234
    assert line["upstream_duration_ms"] is None


def test_access_log_is_silent_unless_enabled(logs):
    stream = logs(LoggingConfig(level="DEBUG", access_log=False))

    access_line(method="GET", path="/", route="none", cache="pass", status=200, duration=0.1)

    assert not access_enabled()
    assert stream.getvalue() == ""


async def test_the_proxy_writes_one_access_line_per_request_with_upstream_time(
    logs, make_proxy, upstream
):
    stream = logs(LoggingConfig(level="WARNING", access_log=True))
    proxy = await make_proxy()
    await proxy.client.post("/agents/select", json={"task": "logged"})
    await proxy.client.post("/agents/select", json={"task": "logged"})
    await proxy.client.get("/not/cached")

    access = [line for line in lines(stream) if line.get("event") == "access"]

    assert [(a["route"], a["cache"], a["status"]) for a in access] == [
        ("select", "miss", 200),
        ("select", "hit", 200),
        ("none", "pass", 200),
    ]
    assert access[0]["upstream_duration_ms"] > 0
    assert access[1]["upstream_duration_ms"] is None
    assert access[2]["upstream_duration_ms"] > 0
