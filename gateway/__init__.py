"""The public process: authenticates callers, enforces tenancy and limits, forwards MCP."""
