"""MCP: configured servers, pinned tools, the SDK connection, and `stead mcp serve`."""
