"""The errors sidecache raises, each caught in one place."""


class SidecacheError(Exception):
    """Base of every error sidecache raises on purpose."""


class ConfigError(SidecacheError):
    """The configuration file is invalid; the message names the field."""


class UpstreamError(SidecacheError):
    """The upstream service could not answer."""

    status = 502
    reason = "upstream_error"


class UpstreamUnreachable(UpstreamError):
    """The upstream refused or dropped the connection."""

    status = 502
    reason = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the configured timeout."""

    status = 504
    reason = "upstream_timeout"


class TierUnavailable(SidecacheError):
    """A cache tier (Redis, PostgreSQL) failed or its circuit is open."""


class EntryFormatError(SidecacheError):
    """Bytes read back from a tier are not a valid cache entry."""


class EmbedderError(SidecacheError):
    """The embedder could not turn a text into a vector (error, timeout, bad answer)."""


class Overloaded(UpstreamError):
    """No upstream slot became free within the queue timeout: the request is shed."""

    status = 503
    reason = "overloaded"
