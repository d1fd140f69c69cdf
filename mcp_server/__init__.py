"""The internal process: MCP tools, reachable only with a gateway's internal assertion."""
