"""The OpenAI-compatible API rules (``mode: openai``): which requests are the same question,
which may be answered from cache, which answers may be stored, and how one stored answer is
given both as a JSON completion and as an event stream. Pure functions, no I/O.

The gateways that cache these APIs are known for keys that miss what changes the answer
(``tools``, ``max_tokens``, ...), for treating an omitted ``temperature`` as 0 (the API's
default is 1.0), and for streamed answers stored incomplete or replayed without their usage
chunk. So the key is the whole body but for a short list of fields that never change the
answer, a sampled request is not cached unless the route says so, and an answer is stored
only when it ended as a complete one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.keys import header_values, strict_json
from core.sse import Event, EventReader, encode

#: Body fields that change nothing in the answer: who asked (``user``), the client's own tags
#: (``metadata``), and how the answer is framed (``stream``; ``stream_options`` but for
#: ``include_usage``, see ``key_body``).
UNKEYED_FIELDS = ("user", "metadata", "stream", "stream_options")
#: The API's defaults for the sampling parameters (an omitted temperature is 1.0, not 0).
DEFAULT_TEMPERATURE = 1.0
DEFAULT_N = 1
#: Finish reasons of a complete answer; anything else (``length``, ``content_filter``, none
#: at all) is not stored.
COMPLETE_FINISH_REASONS = frozenset({"stop", "tool_calls", "function_call"})
#: Request headers that choose who answers (an organisation's or project's models and
#: fine-tunes, Azure's per-deployment key, a beta API version): forwarded, so keyed. (The
#: credentials themselves partition entries by tenant, as on every route.)
KEYED_HEADERS = ("OpenAI-Organization", "OpenAI-Project", "OpenAI-Beta", "api-key")
DONE = "[DONE]"
EVENT_STREAM = "text/event-stream"
JSON_TYPE = "application/json"

#: Endpoints by the end of their path.
CHAT = "chat"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"
_ENDPOINTS = (
    ("/chat/completions", CHAT),
    ("/completions", COMPLETIONS),
    ("/embeddings", EMBEDDINGS),
)


@dataclass(frozen=True, slots=True)
class LlmRequest:
    """What a request asks for, as far as caching goes. ``refused``: why it may not use the
    cache (``None``: it may); ``stream``: answered as an event stream; ``usage``: the answer
    carries token usage (a JSON answer always does, a stream when ``include_usage``)."""

    refused: str | None
    stream: bool = False
    usage: bool = True


def endpoint(path: str) -> str | None:
    """Which API ``path`` is (chat completions, completions, embeddings), or ``None``."""
    path = path.rstrip("/")
    return next((kind for suffix, kind in _ENDPOINTS if path.endswith(suffix)), None)


def parse_request(path: str, body: bytes, sampled: bool = False) -> LlmRequest:
    """Whether the request may use the cache, and the form of answer it wants.

    Embeddings are deterministic. A completion is cached only when deterministic by request —
    ``temperature`` 0 or a ``seed``, and ``n`` at most 1 — unless the route opts in to
    caching sampled answers (``sampled``)."""
    kind = endpoint(path)
    if kind is None:
        return LlmRequest("endpoint")
    document = _object(body)
    if document is None:
        return LlmRequest("body")
    stream = document.get("stream", False)
    if not isinstance(stream, bool):
        return LlmRequest("body")
    if kind == EMBEDDINGS:
        return LlmRequest(None)
    options = document.get("stream_options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        return LlmRequest("body")
    usage = not stream or options.get("include_usage") is True
    if not sampled and not is_deterministic(document):
        return LlmRequest("sampled", stream, usage)
    return LlmRequest(None, stream, usage)


def is_deterministic(document: dict[str, Any]) -> bool:
    """A completion request the model answers the same way each time: ``temperature`` 0 or
    a ``seed`` set, and one choice. Omitted values are the API's defaults."""
    temperature = document.get("temperature")
    if temperature is None:
        temperature = DEFAULT_TEMPERATURE
    n = document.get("n")
    if n is None:
        n = DEFAULT_N
    if not _is_number(temperature) or not _is_number(n) or n > 1:
        return False
    return temperature == 0 or document.get("seed") is not None


def key_body(body: bytes, headers: Mapping[str, str]) -> bytes:
    """What the key covers of a request: the body but ``UNKEYED_FIELDS``, whether the
    answer carries usage (a JSON answer, or a stream with ``include_usage``: the same stored
    answer serves both; a stream without usage has its own), and the ``KEYED_HEADERS`` that
    choose the account, project or API version that answers."""
    document = _object(body)
    if document is None:
        return body  # (never keyed: such a request is refused, see ``parse_request``)
    scope = header_values(headers, KEYED_HEADERS)
    stream = document.get("stream") is True
    options = document.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    question = {name: value for name, value in document.items() if name not in UNKEYED_FIELDS}
    usage = not stream or include_usage
    return json.dumps({"question": question, "usage": usage, "scope": scope}).encode()


# --- answers -----------------------------------------------------------------------------


def unstorable_answer(content_type: str, body: bytes) -> str | None:
    """Why an answer (JSON, or an event stream recorded whole) must not be stored."""
    if EVENT_STREAM in content_type.lower():
        return unstorable_stream(*read_events(body))
    document = _object(body)
    if document is None:
        return "not-json"
    return _unstorable_document(document)


def unstorable_stream(events: list[Event], pending: bytes = b"") -> str | None:
    """Why a recorded event stream is not a complete answer: it must end with
    ``data: [DONE]`` (nothing after it), and every chunk before it must be a JSON object
    without an error, whose choices all finished as a complete answer."""
    if not events or events[-1].data != DONE or pending.strip():
        return "incomplete"
    reasons: dict[int, Any] = {}
    for event in events[:-1]:
        chunk = _json(event.data)
        if event.event != "message" or not isinstance(chunk, dict):
            return "not-json"
        if chunk.get("error") is not None:
            return "error"
        for choice in _choices(chunk):
            index = choice.get("index", 0)
            reason = choice.get("finish_reason")
            if reason is not None or index not in reasons:
                reasons[index] = reason
    if not reasons:
        return "no-choices"
    return _unfinished(reasons.values())


def _unstorable_document(document: dict[str, Any]) -> str | None:
    if document.get("error") is not None:
        return "error"
    if isinstance(document.get("data"), list) and "choices" not in document:
        return None  # embeddings
    choices = _choices(document)
    if not choices:
        return "no-choices"
    return _unfinished(choice.get("finish_reason") for choice in choices)


def _unfinished(reasons: Iterable[Any]) -> str | None:
    for reason in reasons:
        if reason not in COMPLETE_FINISH_REASONS:
            return f"finish_reason {reason}" if isinstance(reason, str) else "unfinished"
    return None


def read_events(body: bytes) -> tuple[list[Event], bytes]:
    """A recorded event stream's events, and the bytes of an unfinished one after them."""
    reader = EventReader()
    return reader.feed(body), reader.pending


def usage(content_type: str, body: bytes) -> dict[str, int]:
    """The tokens a stored answer reports using, by kind (``prompt``, ``completion``): what
    a hit saves. Empty when the answer has none."""
    if EVENT_STREAM in content_type.lower():
        events, _ = read_events(body)
        chunks = [_json(event.data) for event in events if event.data != DONE]
        found = [c["usage"] for c in chunks if isinstance(c, dict) and c.get("usage")]
        reported = found[-1] if found else None
    else:
        document = _object(body)
        reported = document.get("usage") if document is not None else None
    if not isinstance(reported, dict):
        return {}
    counts = {kind: reported.get(f"{kind}_tokens") for kind in ("prompt", "completion")}
    return {kind: count for kind, count in counts.items() if _is_count(count)}


def assemble(events: list[Event]) -> dict[str, Any]:
    """The JSON completion a recorded stream amounts to, as the non-streaming API gives it:
    each choice's deltas merged into one ``message`` (``content``, ``reasoning_content``,
    ``tool_calls`` ... concatenated), or its ``text`` for legacy completions; the final
    ``finish_reason``; the ``usage`` chunk's usage."""
    chunks = [c for e in events if e.data != DONE and isinstance(c := _json(e.data), dict)]
    completion: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for name, value in chunk.items():
            if name not in ("choices", "usage") and name not in completion:
                completion[name] = value
        if chunk.get("usage"):
            completion["usage"] = chunk["usage"]
        for choice in _choices(chunk):
            _merge_choice(choices.setdefault(choice.get("index", 0), {}), choice)
    chat = completion.get("object") == "chat.completion.chunk"
    if chat:
        completion["object"] = "chat.completion"
    completion["choices"] = [_finish_choice(choices[i], chat) for i in sorted(choices)]
    completion.setdefault("usage", None)
    return completion


def render_stream(completion: dict[str, Any], include_usage: bool) -> bytes:
    """A stored JSON completion as the event stream the streaming API gives: one chunk per
    choice with its whole message as the delta, one with its finish reason, the usage chunk
    when asked for, then ``data: [DONE]``."""
    chat = completion.get("object") == "chat.completion"
    head = {k: v for k, v in completion.items() if k not in ("choices", "usage", "object")}
    head["object"] = "chat.completion.chunk" if chat else completion.get("object")
    if include_usage:
        head["usage"] = None
    out = []
    for choice in _choices(completion):
        index = choice.get("index", 0)
        if chat:
            delta = _delta(choice.get("message") or {})
            first = {"index": index, "delta": delta, "logprobs": choice.get("logprobs")}
            last = {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
            out.append({**head, "choices": [{**first, "finish_reason": None}]})
            out.append({**head, "choices": [last]})
        else:
            out.append({**head, "choices": [choice]})
    if include_usage:
        out.append({**head, "choices": [], "usage": completion.get("usage")})
    return b"".join(encode(json.dumps(chunk)) for chunk in out) + encode(DONE)


def _merge_choice(into: dict[str, Any], choice: dict[str, Any]) -> None:
    for name, value in choice.items():
        if name == "delta" and isinstance(value, dict):
            _merge(into.setdefault("message", {}), value)
        elif name == "text" and isinstance(value, str):
            into["text"] = into.get("text", "") + value
        elif name == "logprobs" and isinstance(value, dict):
            _merge(into.setdefault("logprobs", {}), value)
        elif value is not None or name not in into:
            into[name] = value


#: Delta fields that are sent once, not in pieces to concatenate.
_SENT_ONCE = frozenset({"role", "id", "type", "index"})


def _merge(into: dict[str, Any], delta: dict[str, Any]) -> None:
    """Merge one streamed delta: text is concatenated, objects merged, lists of objects with
    an ``index`` (tool calls) merged by it, other lists extended."""
    for name, value in delta.items():
        current = into.get(name)
        if value is None:
            into.setdefault(name, None)
        elif isinstance(value, str) and name not in _SENT_ONCE:
            into[name] = (current if isinstance(current, str) else "") + value
        elif isinstance(value, dict):
            if not isinstance(current, dict):
                current = into[name] = {}
            _merge(current, value)
        elif isinstance(value, list):
            if not isinstance(current, list):
                current = into[name] = []
            _merge_list(current, value)
        elif current is None:
            into[name] = value


def _merge_list(items: list[Any], values: list[Any]) -> None:
    for value in values:
        if isinstance(value, dict) and "index" in value:
            known = [i for i in items if isinstance(i, dict) and i.get("index") == value["index"]]
            if not known:
                items.append({})
                known = items[-1:]
            _merge(known[0], value)
        else:
            items.append(value)


def _finish_choice(choice: dict[str, Any], chat: bool) -> dict[str, Any]:
    if chat:
        message = choice.setdefault("message", {})
        message.setdefault("role", "assistant")
        message.setdefault("content", None)
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict):
                call.pop("index", None)  # a stream's bookkeeping, not part of the message
    choice.setdefault("logprobs", None)
    choice.setdefault("finish_reason", None)
    return choice


def _delta(message: dict[str, Any]) -> dict[str, Any]:
    """A whole message as one streamed delta (tool calls get the ``index`` chunks carry)."""
    delta = dict(message)
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        delta["tool_calls"] = [
            {"index": i, **call} if isinstance(call, dict) else call for i, call in enumerate(calls)
        ]
    return delta


def as_json(completion: dict[str, Any]) -> bytes:
    return json.dumps(completion).encode()


def _choices(document: dict[str, Any]) -> list[dict[str, Any]]:
    choices = document.get("choices")
    if not isinstance(choices, list):
        return []
    return [choice for choice in choices if isinstance(choice, dict)]


def _object(body: bytes) -> dict[str, Any] | None:
    document = _json(body)
    return document if isinstance(document, dict) else None


def _json(text: str | bytes) -> Any:
    try:
        return strict_json(text)  # (a member named twice: refused, see core.keys)
    except ValueError:
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
