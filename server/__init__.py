"""The CloudNativePG MCP server (stdio only)."""
