"""CLI: parse flags and environment, connect to Kubernetes, serve MCP over stdio."""

import logging
import sys
from collections.abc import Sequence

import anyio

from server.app import create_server
from server.config import ConfigError, load_config
from server.kube import ClusterUnavailable, Kube, connect


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cnpg-mcp-server` console script and `python -m server`."""
    # stdout carries the MCP protocol; every log line goes to stderr.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"cnpg-mcp-server: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        kube = connect(config)
    except ClusterUnavailable as exc:
        # Start anyway: a client (often behind the gateway, which sees only a process exit) then gets the cause
        # and the fix in the instructions and in every tool result instead of a closed connection.
        print(f"cnpg-mcp-server: warning: {exc.describe()}", file=sys.stderr)
        kube = Kube.without_cluster(exc)
    try:
        server = create_server(config, kube)
        anyio.run(server.run_stdio_async)
    except KeyboardInterrupt:
        pass
    finally:
        kube.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
