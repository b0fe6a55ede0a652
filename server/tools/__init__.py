"""Tools of the CNPG MCP server, one module per resource."""
