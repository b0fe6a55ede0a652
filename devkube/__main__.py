"""The sandbox runner: `python -m devkube --port PORT --kubeconfig PATH`, started by scripts/run without a cluster.

It serves the sandbox Kubernetes API with the simulated CloudNativePG operator, writes a kubeconfig for it, prints
one JSON line when ready and runs until SIGTERM or SIGINT. Everything lives in memory: nothing is deployed.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import yaml

from .operator import Operator
from .server import DEFAULT_USER, KubeApiServer

NAME = "cnpg-mcp-sandbox"
GIT_VERSION = "v1.34.0-cnpg-mcp-sandbox"
BANNER = (
    "SANDBOX: this is a local, in-memory Kubernetes API with a simulated CloudNativePG operator. Nothing is "
    "deployed and no PostgreSQL runs; every object is lost when it stops."
)

DESCRIPTION = """\
Run the cnpg-mcp sandbox: a local Kubernetes API server that validates CloudNativePG 1.30 objects against the
real CRDs, with a simulated CNPG operator (clusters reach a healthy state with instance pods, scaling,
switchover, restart, hibernation, backups, poolers, databases and roles behave as in a cluster).

State lives in memory only: nothing is deployed anywhere, no PostgreSQL runs, and everything is gone when the
sandbox stops. It is what scripts/run starts when there is no kubeconfig (or with --sandbox).
"""

EPILOG = """\
When ready it prints one line to stdout:
  {"sandbox": "ready", "url": "http://HOST:PORT", "kubeconfig": "PATH"}
The kubeconfig (mode 0600; context, cluster and user all named cnpg-mcp-sandbox) holds a random bearer token
made for this run; the token is never printed. Each write to the API is logged to stderr (verb, kind,
namespace/name, status), and so is each phase the simulated operator moves a cluster through.
SIGTERM or SIGINT stops it at once (exit 0) and removes the kubeconfig it wrote, nothing else.
A port already in use exits with status 2; choose another with --port (SANDBOX_PORT for scripts/run, 0 = any
free port).
"""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devkube",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on; 0 picks a free port")
    parser.add_argument("--kubeconfig", type=Path, required=True, help="where to write the kubeconfig (mode 0600)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=1.0,
        help="seconds between the simulated operator's steps, so phases can be watched (default 1.0)",
    )
    parser.add_argument(
        "--namespace", default="default", help="namespace of the kubeconfig's context, created if needed (default)"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    if args.step_seconds <= 0:
        parser.error("--step-seconds must be positive")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", args.namespace):
        parser.error("--namespace must be a DNS label (lower case letters, digits and '-', at most 63)")
    return args


def write_kubeconfig(path: Path, url: str, token: str, namespace: str) -> None:
    """The kubeconfig for this sandbox, created with mode 0600 before any secret is written into it."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": NAME, "cluster": {"server": url}}],
        "users": [{"name": NAME, "user": {"token": token}}],
        "contexts": [{"name": NAME, "context": {"cluster": NAME, "user": NAME, "namespace": namespace}}],
        "current-context": NAME,
        "preferences": {},
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(yaml.safe_dump(config, sort_keys=False))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="devkube %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("devkube")
    token = secrets.token_urlsafe(32)
    server = KubeApiServer(
        token=token, user=DEFAULT_USER, host=args.host, port=args.port, git_version=GIT_VERSION, record_requests=False
    )
    if server.get("v1", "namespaces", None, args.namespace) is None:
        server.add_namespace(args.namespace)
    Operator(server, step_seconds=args.step_seconds)
    try:
        server.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(
                f"devkube: port {args.port} on {args.host} is already in use; choose another port with --port "
                "(SANDBOX_PORT=<port> for scripts/run; 0 picks a free one)",
                file=sys.stderr,
            )
        else:
            print(f"devkube: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        write_kubeconfig(args.kubeconfig, server.url, token, args.namespace)
    except OSError as exc:
        server.stop()
        print(f"devkube: cannot write the kubeconfig {args.kubeconfig}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        log.info("%s", BANNER)
        log.info("Kubernetes API at %s, kubeconfig %s (context %s, namespace %s)", server.url, args.kubeconfig, NAME,
                 args.namespace)
        print(json.dumps({"sandbox": "ready", "url": server.url, "kubeconfig": str(args.kubeconfig)}), flush=True)
        while not stop.wait(3600):
            pass
        log.info("stopping; the sandbox state is discarded")
    finally:
        server.stop()
        args.kubeconfig.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
