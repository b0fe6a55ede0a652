"""cnpg-mcp-connect: a token-handling bridge from stdio (or a local HTTP port) to a remote MCP endpoint.

Nothing here imports `gateway/` or `server/`: the helper runs on the user's machine and talks to any
MCP streamable HTTP endpoint.
"""
