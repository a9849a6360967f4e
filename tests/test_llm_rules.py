"""The OpenAI API rules (core/llm.py), row by row, without sockets."""

from __future__ import annotations

import json

import pytest

from core import llm
from core.config import RouteConfig
from core.entry import CachedResponse
from core.modes import MODES, Form
from core.sse import encode

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hi"}]


def body(**fields) -> bytes:
    return json.dumps({"model": "m", "messages": MESSAGES, **fields}).encode()


@pytest.mark.parametrize(
    ("fields", "refused"),
    [
        ({"temperature": 0}, None),
        ({"temperature": 0.0, "n": 1}, None),
        ({"seed": 7}, None),  # a seed makes sampling reproducible
        ({"seed": 7, "temperature": 1.2}, None),
        ({}, "sampled"),  # omitted temperature is the API's default, 1.0
        ({"temperature": None}, "sampled"),
        ({"temperature": 0.7}, "sampled"),
        ({"seed": None}, "sampled"),
        ({"temperature": 0, "n": 2}, "sampled"),  # several choices: sampled by definition
        ({"seed": 1, "n": 3}, "sampled"),
        ({"temperature": False}, "sampled"),  # not a number
        ({"temperature": "0"}, "sampled"),
        ({"temperature": 0, "stream": "yes"}, "body"),
        ({"temperature": 0, "stream": True, "stream_options": []}, "body"),
    ],
)
def test_a_completion_is_cacheable_only_when_deterministic_by_request(fields, refused):
    assert llm.parse_request(CHAT, body(**fields)).refused == refused


@pytest.mark.parametrize("fields", [{}, {"temperature": 0.9}, {"n": 4}])
def test_a_route_may_opt_in_to_sampled_answers(fields):
    assert llm.parse_request(CHAT, body(**fields), sampled=True).refused is None


@pytest.mark.parametrize(
    ("path", "payload", "refused"),
    [
        ("/v1/embeddings", b'{"model": "e", "input": "hi"}', None),
        ("/v1/completions", b'{"model": "m", "prompt": "hi", "temperature": 0}', None),
        ("/v1/completions", b'{"model": "m", "prompt": "hi"}', "sampled"),
        ("/v1/responses", b'{"model": "m", "input": "hi", "temperature": 0}', "endpoint"),
        (CHAT, b"not json", "body"),
        (CHAT, b"[1, 2]", "body"),
        # A member named twice: the model server may read the other one (see core.keys).
        (CHAT, b'{"model": "m", "temperature": 0, "temperature": 1}', "body"),
        (CHAT, b'{"model": "m", "temperature": NaN}', "body"),
    ],
)
def test_endpoints_and_bodies(path, payload, refused):
    assert llm.parse_request(path, payload).refused == refused


@pytest.mark.parametrize(
    ("fields", "stream", "usage"),
    [
        ({}, False, True),  # a JSON answer always has usage
        ({"stream": False}, False, True),
        ({"stream": True}, True, False),
        ({"stream": True, "stream_options": {"include_usage": True}}, True, True),
        ({"stream": True, "stream_options": {"include_usage": False}}, True, False),
    ],
)
def test_the_form_asked_for(fields, stream, usage):
    asked = llm.parse_request(CHAT, body(temperature=0, **fields))
    assert (asked.stream, asked.usage) == (stream, usage)


def key(headers: dict[str, str] | None = None, **fields) -> bytes:
    return llm.key_body(body(temperature=0, **fields), headers or {})


@pytest.mark.parametrize(
    "fields",
    [
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"tool_choice": "required"},
        {"max_tokens": 5},
        {"max_completion_tokens": 5},
        {"response_format": {"type": "json_object"}},
        {"seed": 1},
        {"top_p": 0.5},
        {"logprobs": True},
        {"stop": ["\n"]},
        {"stream": True},  # no usage chunk: not the same stored answer as a JSON one
    ],
)
def test_the_key_covers_what_changes_the_answer(fields):
    assert key(**fields) != key()


@pytest.mark.parametrize(
    "fields",
    [
        {"user": "alice"},
        {"metadata": {"trace": "1"}},
        {"stream": False},
        {"stream": True, "stream_options": {"include_usage": True}},  # same answer, streamed
        {"stream": True, "stream_options": {"include_usage": True, "x": 1}},
    ],
)
def test_the_key_leaves_out_what_does_not_change_the_answer(fields):
    assert key(**fields) == key()


def test_a_body_that_is_not_an_object_is_keyed_as_it_is():
    assert llm.key_body(b"not json", {}) == b"not json"


@pytest.mark.parametrize(
    "headers",
    [
        {"OpenAI-Organization": "org-a"},
        {"OpenAI-Project": "proj-a"},
        {"OpenAI-Beta": "assistants=v2"},
        {"api-key": "azure-key"},
        {"OpenAI-Organization": ""},  # sent empty is not the same as not sent
    ],
)
def test_the_key_covers_the_headers_that_choose_who_answers(headers):
    """Forwarded, and each may select other models or fine-tunes: keyed."""
    assert key(headers) != key()
    assert key(headers) == key(dict(headers))
    other = {name: value + "-other" for name, value in headers.items()}
    assert key(other) != key(headers)


def test_other_headers_do_not_change_the_key():
    assert key({"User-Agent": "x", "X-Request-Id": "1"}) == key()


def completion(finish="stop", **extra) -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": finish}
    return json.dumps({"object": "chat.completion", "choices": [choice], **extra}).encode()


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (completion(), None),
        (completion("tool_calls"), None),
        (completion("length"), "finish_reason length"),
        (completion("content_filter"), "finish_reason content_filter"),
        (completion(None), "unfinished"),
        (completion(error={"message": "overloaded"}), "error"),
        (b'{"object": "list", "data": [{"embedding": [0.1]}]}', None),
        (b'{"error": {"message": "bad"}}', "error"),
        (b'{"choices": []}', "no-choices"),
        (b"<html>", "not-json"),
    ],
)
def test_which_json_answers_are_stored(answer, reason):
    assert llm.unstorable_answer("application/json", answer) == reason


def chunk(delta=None, finish=None, **extra) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return encode(json.dumps({"object": "chat.completion.chunk", "choices": choices, **extra}))


WHOLE = chunk({"role": "assistant", "content": "a"}) + chunk({"content": "b"}) + chunk({}, "stop")
DONE = encode("[DONE]")


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (WHOLE + DONE, None),
        (WHOLE + chunk(usage={"prompt_tokens": 1}) + DONE, None),
        (WHOLE, "incomplete"),  # no [DONE]
        (WHOLE + b"data: [DONE]", "incomplete"),  # the terminal event never dispatched
        (WHOLE + DONE + b"data: {}", "incomplete"),  # something after it
        (chunk({"content": "a"}, "length") + DONE, "finish_reason length"),
        (chunk({"content": "a"}) + DONE, "unfinished"),
        (WHOLE + chunk(error={"message": "x"}) + DONE, "error"),
        (WHOLE + b"data: not json\n\n" + DONE, "not-json"),
        (WHOLE + b"event: error\ndata: {}\n\n" + DONE, "not-json"),
        (DONE, "no-choices"),
        (b"", "incomplete"),
    ],
)
def test_a_stream_is_stored_only_whole_and_complete(stream, reason):
    assert llm.unstorable_answer("text/event-stream", stream) == reason


def test_a_stream_assembles_into_the_json_completion():
    stream = (
        chunk({"role": "assistant", "content": ""}, id="c1", model="m", created=1)
        + chunk({"reasoning_content": "think"}, id="c1")
        + chunk({"content": "Hel"})
        + chunk({"content": "lo"})
        + chunk({}, "stop")
        + chunk(usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
        + DONE
    )
    assembled = llm.assemble(llm.read_events(stream)[0])
    assert assembled == {
        "object": "chat.completion",
        "id": "c1",
        "model": "m",
        "created": 1,
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello", "reasoning_content": "think"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
    }


def test_tool_call_pieces_merge_by_index():
    call = {"index": 0, "id": "call_1", "type": "function"}
    stream = (
        chunk({"role": "assistant", "tool_calls": [{**call, "function": {"name": "f"}}]})
        + chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]})
        + chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]})
        + chunk({}, "tool_calls")
        + DONE
    )
    message = llm.assemble(llm.read_events(stream)[0])["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
        ],
    }


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_json_completion_renders_as_a_stream_that_assembles_back(include_usage):
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
    original = {"id": "x", "object": "chat.completion", "model": "m", "choices": [choice]}
    original["usage"] = usage
    stream = llm.render_stream(original, include_usage)
    assert llm.unstorable_answer("text/event-stream", stream) is None
    events = llm.read_events(stream)[0]
    assert events[-1].data == "[DONE]"
    assembled = llm.assemble(events)
    assert assembled["choices"] == original["choices"]
    assert assembled["usage"] == (usage if include_usage else None)


USAGE = {"prompt_tokens": 2, "completion_tokens": 1}
JSON_TYPE, STREAM_TYPE = "application/json", "text/event-stream"


@pytest.mark.parametrize(
    ("content_type", "answer", "saved"),
    [
        (JSON_TYPE, completion(usage=USAGE), {"prompt": 2, "completion": 1}),
        (JSON_TYPE, b'{"data": [], "usage": {"prompt_tokens": 4}}', {"prompt": 4}),
        (STREAM_TYPE, WHOLE + chunk(usage=USAGE) + DONE, {"prompt": 2, "completion": 1}),
        (STREAM_TYPE, WHOLE + DONE, {}),
        (JSON_TYPE, completion(usage={"prompt_tokens": -1, "completion_tokens": True}), {}),
    ],
)
def test_tokens_saved_come_from_the_stored_usage(content_type, answer, saved):
    assert llm.usage(content_type, answer) == saved


def entry(content_type: str, payload: bytes) -> CachedResponse:
    return CachedResponse(200, (("Content-Type", content_type),), payload)


STREAMED, AS_JSON = Form("stream", stream=True), Form("json")


@pytest.mark.parametrize(
    ("stored", "form", "content_type"),
    [
        (entry(JSON_TYPE, completion()), STREAMED, STREAM_TYPE),
        (entry(STREAM_TYPE, WHOLE + DONE), AS_JSON, JSON_TYPE),
        (entry(STREAM_TYPE, WHOLE + DONE), STREAMED, STREAM_TYPE),
        (entry(JSON_TYPE, completion()), AS_JSON, JSON_TYPE),
    ],
)
def test_the_openai_mode_presents_one_entry_in_either_form(stored, form, content_type):
    presented = MODES["openai"].present(stored, form)
    assert dict(presented.headers)["Content-Type"] == content_type
    if content_type == dict(stored.headers)["Content-Type"]:
        assert presented is stored  # the stored bytes, as the upstream sent them
    assert llm.unstorable_answer(content_type, presented.body) is None


def test_the_openai_mode_stores_streams_that_other_modes_do_not():
    route = RouteConfig(name="chat", path=CHAT, mode="openai")
    headers = {"Content-Type": "text/event-stream"}
    assert MODES["openai"].unstorable_reason(route, {}, 200, headers) is None
    assert MODES["json"].unstorable_reason(route, {}, 200, headers) == "stream"
    assert MODES["openai"].unstorable_reason(route, {}, 200, {**headers, "Set-Cookie": "a=b"})
