"""``POST /agents/run``: a simulated agent run streamed as server-sent events."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from .state import SELECTOR, SETTINGS
from .validation import json_object, text_field


def sse_event(event: str, data: dict[str, object], event_id: int) -> bytes:
    """One server-sent event frame."""
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def run_agent(request: web.Request) -> web.StreamResponse:
    """Streams ``step`` events with a pause between them, then one ``done`` event.

    The body is ``{"task": str, "agent_id"?: str}``; without ``agent_id`` the best-ranked
    agent runs the task.
    """
    body = await json_object(request)
    task = text_field(body, "task")
    selector = request.app[SELECTOR]
    agents = {agent.id: agent for agent in selector.agents}
    agent_id = body.get("agent_id")
    agent = agents.get(agent_id) if isinstance(agent_id, str) else selector.rank(task, 1)[0].agent
    if agent is None:
        return web.json_response({"error": f"agent_id: unknown agent {agent_id!r}"}, status=404)

    steps = [
        f"{agent.name} received the task",
        f"planning with skills: {', '.join(agent.skills[:3])}",
        "looking up the knowledge base",
        "drafting the answer",
    ]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    delay = request.app[SETTINGS].step_delay
    try:
        for number, message in enumerate(steps, start=1):
            step = {"step": number, "agent": agent.id, "message": message}
            await response.write(sse_event("step", step, number))
            await asyncio.sleep(delay)
        answer = f"{agent.name} completed the task"
        done = {"agent": agent.id, "task": task, "steps": len(steps), "answer": answer}
        await response.write(sse_event("done", done, len(steps) + 1))
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away mid-stream; nothing left to send
    return response
