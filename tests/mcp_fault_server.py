"""An MCP server written with the SDK for the failure cases the reference servers lack.

Run as ``python -m tests.mcp_fault_server`` (stdio). Its state is a directory named by
``FAULT_STATE`` (given in the server's configured environment):

* ``note(text)`` records one effect per ``_meta["io.stead/idempotency_key"]`` in
  ``effects.jsonl`` (a repeat of a key is not a second effect), then, while a file
  ``block`` exists, waits: a worker can be killed mid-call.
* the file ``schema_v2`` changes ``note``'s definition (a new optional argument).
* ``fail()`` answers ``isError``; ``hang()`` never answers; ``whoami()`` echoes the
  secret ``FAULT_TOKEN`` from its environment; ``env_names()`` lists its environment.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

STATE = Path(os.environ.get("FAULT_STATE", "."))
server: MCPServer[Any] = MCPServer("stead-fault")

if (STATE / "schema_v2").exists():

    @server.tool(description="Save a note (v2: with a priority).")
    async def note(text: str, ctx: Context, priority: int = 0) -> dict[str, Any]:
        return await _note(text, ctx)

else:

    @server.tool(description="Save a note.")
    async def note(text: str, ctx: Context) -> dict[str, Any]:  # type: ignore[misc]
        return await _note(text, ctx)


async def _note(text: str, ctx: Context) -> dict[str, Any]:
    meta = ctx.request_context.meta or {}
    key = str(meta.get("io.stead/idempotency_key", ""))
    log = STATE / "effects.jsonl"
    seen = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    if not any(e["key"] == key for e in seen):
        with log.open("a") as out:
            out.write(json.dumps({"key": key, "text": text}) + "\n")
    (STATE / "calls").open("a").write(key + "\n")
    while (STATE / "block").exists():
        await asyncio.sleep(0.05)
    return {"saved": text, "key": key}


@server.tool(description="Always fails.")
async def fail() -> str:
    raise ToolError("the fault server refuses on purpose")


@server.tool(description="Never answers.")
async def hang() -> str:
    await asyncio.Event().wait()
    return "unreachable"


@server.tool(description="Who am I.")
async def whoami() -> str:
    return f"token={os.environ.get('FAULT_TOKEN', '')}"


@server.tool(description="The names of the variables in this server's environment.")
async def env_names() -> list[str]:
    return sorted(os.environ)


if __name__ == "__main__":
    server.run("stdio")
