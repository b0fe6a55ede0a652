"""Streamable HTTP gateway with OIDC auth in front of any stdio MCP server."""
