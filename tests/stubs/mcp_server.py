"""A real MCP server for tests, written with the official SDK (`MCPServer`, formerly FastMCP).

Run it:  python -m tests.stubs.mcp_server --transport stdio
         python -m tests.stubs.mcp_server --transport http --port 8766   (streamable HTTP at /mcp)
         python -m tests.stubs.mcp_server --transport sse --port 8767    (SSE at /sse)

Tools: add(a, b) → a + b; echo(text) → text; env_value(name) → the server process's variable
(to check env passing and scrubbing); fail(message) → a tool error; crash() → the process exits;
sleep(seconds) → "slept".
"""

from __future__ import annotations

import argparse
import asyncio
import os

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("goclaw-test-stub")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def env_value(name: str) -> str:
    """The value of an environment variable of the server process ('' when unset)."""
    return os.environ.get(name, "")


@server.tool()
def fail(message: str) -> str:
    """Always fails with the given message."""
    raise ToolError(message)


@server.tool()
def crash() -> str:
    """Ends the server process at once (a crash, as far as the client can tell)."""
    os._exit(3)


@server.tool()
async def sleep(seconds: float) -> str:
    """Wait, then answer."""
    await asyncio.sleep(seconds)
    return "slept"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=["stdio", "http", "sse"], default="stdio")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    if args.transport == "stdio":
        server.run("stdio")
    elif args.transport == "sse":
        server.run("sse", host="127.0.0.1", port=args.port)
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
