"""A real OpenAI-compatible upstream for tests: an aiohttp app on a loopback port speaking
the chat-completions and embeddings wire format, streamed (``text/event-stream``, ending with
``data: [DONE]``) and not. It records every request it receives, and can hold a stream open
after its first chunk until a test releases it, end a stream without ``[DONE]``, or break
it off midway.

Answers are deterministic: the same question (the body without ``stream`` and
``stream_options``) always gets the same answer, and a different one a different answer.
``max_tokens`` below 5 cuts the answer short (``finish_reason: length``); ``tools`` make it
a tool call.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from typing import Any

from aiohttp import web

CREATED = 1_700_000_000


class FakeModel:
    """The upstream; ``calls`` counts requests by path, ``bodies`` keeps them in order."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        #: Hold every stream after its first chunk until ``release`` is set.
        self.hold = False
        self.first_sent = asyncio.Event()
        self.release = asyncio.Event()
        #: Break a stream's connection off after this many chunks.
        self.break_after: int | None = None
        #: End streams (cleanly) without ``data: [DONE]``.
        self.omit_done = False
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{prefix:.*}/chat/completions", self._chat)
        app.router.add_post("/{prefix:.*}/embeddings", self._embeddings)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.calls[request.path] += 1
        self.bodies.append(body)
        answer = _answer(body)
        if not body.get("stream"):
            return web.json_response(_completion(body, answer))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for sent, chunk in enumerate(_chunks(body, answer), start=1):
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if sent == self.break_after:
                assert request.transport is not None
                request.transport.abort()  # mid-body: the proxy sees the stream break off
                raise ConnectionResetError("stream broken off on purpose")
            if sent == 1:
                self.first_sent.set()
                if self.hold:
                    await self.release.wait()
        if not self.omit_done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls[request.path] += 1
        self.bodies.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(text)}
            for i, text in enumerate(inputs)
        ]
        tokens = sum(len(str(text).split()) for text in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response(
            {"object": "list", "data": data, "model": body["model"], "usage": usage}
        )


def _digest(body: dict[str, Any]) -> str:
    question = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    return hashlib.sha256(json.dumps(question, sort_keys=True).encode()).hexdigest()[:12]


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    """The answer's parts: content pieces, reasoning pieces, a tool call, a finish reason."""
    digest = _digest(body)
    if body.get("tools") and body.get("tool_choice") != "none":
        name = body["tools"][0]["function"]["name"]
        arguments = ['{"q": ', f'"{digest}"', "}"]
        return {"digest": digest, "tool": (name, arguments), "finish_reason": "tool_calls"}
    pieces = ["The", " answer", " is", f" {digest}", "."]
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    finish = "stop"
    if isinstance(limit, int) and limit < len(pieces):
        pieces, finish = pieces[:limit], "length"
    return {
        "digest": digest,
        "pieces": pieces,
        "reasoning": ["Thinking", " it", " over"],
        "finish_reason": finish,
    }


def _usage(body: dict[str, Any], answer: dict[str, Any]) -> dict[str, int]:
    prompt = len(json.dumps(body.get("messages", ""))) // 4
    completion = len(answer.get("pieces") or answer["tool"][1])
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _head(body: dict[str, Any], answer: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{answer['digest']}",
        "object": kind,
        "created": CREATED,
        "model": body["model"],
        "system_fingerprint": "fp_test",
    }


def _completion(body: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "refusal": None}
    if "tool" in answer:
        name, arguments = answer["tool"]
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": f"call_{answer['digest']}",
                "type": "function",
                "function": {"name": name, "arguments": "".join(arguments)},
            }
        ]
    else:
        message["content"] = "".join(answer["pieces"])
        message["reasoning_content"] = "".join(answer["reasoning"])
    choice = {"index": 0, "message": message, "logprobs": None}
    return {
        **_head(body, answer, "chat.completion"),
        "choices": [{**choice, "finish_reason": answer["finish_reason"]}],
        "usage": _usage(body, answer),
    }


def _chunks(body: dict[str, Any], answer: dict[str, Any]) -> list[dict[str, Any]]:
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    head = _head(body, answer, "chat.completion.chunk")
    if include_usage:
        head["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [choice]}

    if "tool" in answer:
        name, arguments = answer["tool"]
        call = {"index": 0, "id": f"call_{answer['digest']}", "type": "function"}
        deltas = [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{**call, "function": {"name": name, "arguments": ""}}],
            }
        ]
        deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": a}}]} for a in arguments]
    else:
        deltas = [{"role": "assistant", "content": "", "refusal": None}]
        deltas += [{"reasoning_content": piece} for piece in answer["reasoning"]]
        deltas += [{"content": piece} for piece in answer["pieces"]]
    out = [chunk(delta) for delta in deltas]
    out.append(chunk({}, answer["finish_reason"]))
    if include_usage:
        out.append({**head, "choices": [], "usage": _usage(body, answer)})
    return out


def _vector(text: Any) -> list[float]:
    digest = hashlib.sha256(str(text).encode()).digest()
    return [byte / 255 for byte in digest[:8]]
