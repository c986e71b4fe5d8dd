"""A small FastMCP server (Python `mcp` 1.x) for the MCP client's tests.

Usage: python fastmcp_server.py stdio
       python fastmcp_server.py sse|streamable-http PORT   (binds 127.0.0.1)
Tools: add (a+b), slow (sleeps `seconds`, default 5), fail (raises), shout (logs a warning
to stderr, then answers).
"""

import sys
import time

from mcp.server.fastmcp import FastMCP

mode = sys.argv[1] if len(sys.argv) > 1 else "stdio"
port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
mcp = FastMCP("astrbot-test", host="127.0.0.1", port=port)


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@mcp.tool()
def slow(seconds: float = 5.0) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "done"


@mcp.tool()
def fail() -> str:
    """Always fails."""
    raise RuntimeError("kaput")


@mcp.tool(name="dotted.name")
def dotted() -> str:
    """A tool whose MCP name the model cannot use as is."""
    print("WARNING: dotted tool called", file=sys.stderr, flush=True)
    return "dotted ok"


mcp.run(mode)
