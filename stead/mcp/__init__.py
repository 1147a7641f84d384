"""MCP: configured servers, pinned tools and the SDK connection (`stead mcp serve` is in
`stead/cli/mcp_serve.py`, an entry point)."""
