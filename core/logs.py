"""Structured logs: one JSON object per line on stderr.

Every line has ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``; fields passed
with ``extra={...}`` become keys of their own, so a line can be filtered on them::

    {"time": "2025-01-01T12:00:00.123Z", "level": "WARNING", "logger": "sidecache.monitor",
     "message": "alert firing: error_rate", "event": "alert", "alert": "error_rate", ...}

The access log is the ``sidecache.access`` logger, written through :func:`access_line` and
silent unless ``logging.access_log`` is on.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from core.config import LoggingConfig

#: Logger of the access log; :func:`access_line` writes to it.
ACCESS_LOGGER = "sidecache.access"

_access = logging.getLogger(ACCESS_LOGGER)

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: the standard keys, then the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def _timestamp(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def setup_logging(config: LoggingConfig, stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (stderr) as JSON, at the configured level.

    Replaces the root logger's handlers, so calling it again reconfigures rather than
    duplicates. The access log is enabled or silenced here.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(config.level.upper())
    # The access log has its own switch: it is written at INFO even when the level is higher.
    _access.setLevel(logging.INFO if config.access_log else logging.CRITICAL + 1)


def access_enabled() -> bool:
    """Whether :func:`access_line` writes anything (lets a caller skip gathering fields)."""
    return _access.isEnabledFor(logging.INFO)


def access_line(
    *,
    method: str,
    path: str,
    route: str,
    cache: str,
    status: int,
    duration: float,
    upstream_duration: float | None = None,
) -> None:
    """Write one access log line for an answered request.

    ``route`` is the route name (``"none"`` for pass-through), ``cache`` the cache result as in
    the metrics (``hit``, ``miss``, ``stale``, ...), durations in seconds; ``upstream_duration``
    is ``None`` when the upstream was not asked.
    """
    if not _access.isEnabledFor(logging.INFO):
        return
    _access.info(
        "%s %s %d",
        method,
        path,
        status,
        extra={
            "event": "access",
            "method": method,
            "path": path,
            "route": route,
            "cache": cache,
            "status": status,
            "duration_ms": round(duration * 1000, 3),
            "upstream_duration_ms": (
                None if upstream_duration is None else round(upstream_duration * 1000, 3)
            ),
        },
    )
