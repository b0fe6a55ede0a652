"""Tiny stdio MCP servers used to exercise the gateway's transport and fault handling."""
