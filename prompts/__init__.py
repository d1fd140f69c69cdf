"""Layered system-prompt composition in a sandboxed Jinja2 environment (not built yet)."""
