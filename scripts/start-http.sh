#!/usr/bin/env bash
# Run the gateway and the CNPG server on this machine the way the two images do: cnpg-mcp-server behind
# `socat UNIX-LISTEN:SOCKET,fork,mode=600,unlink-early EXEC:cnpg-mcp-server` (Dockerfile.server), and
# `cnpg-mcp-gateway --upstream-socket SOCKET` (Dockerfile.gateway) in pool mode, as the ConfigMap runs it. Settings
# come from the environment, as in the ConfigMap: OIDC_ISSUER, OIDC_AUDIENCE, OIDC_JWKS_URI, DCR_PROXY_URL,
# OIDC_SCOPE, PUBLIC_URL, TOOL_SCOPES, HOST, PORT, METRICS_PORT, UPSTREAM_MODE, POOL_MIN, POOL_MAX, MAX_SESSIONS, ...
# for the gateway; KUBECONFIG, CNPG_NAMESPACES, CNPG_READ_ONLY, ... for the server (README, Configuration). Ctrl-C
# or SIGTERM stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

usage() {
    cat <<'USAGE'
Usage: scripts/start-http.sh [GATEWAY FLAGS...]

Starts cnpg-mcp-server behind socat on a Unix socket and cnpg-mcp-gateway connected to it, like the images.
Environment:
  OIDC_ISSUER, OIDC_AUDIENCE   the IdP and the audience tokens must carry (auth is off without OIDC_ISSUER,
                               and the gateway then listens on loopback only)
  OIDC_JWKS_URI, DCR_PROXY_URL, OIDC_SCOPE, PUBLIC_URL, TOOL_SCOPES, HOST, PORT (3000), METRICS_PORT (9464)
                               and every other gateway setting (cnpg-mcp-gateway --help)
  UPSTREAM_MODE (pool), POOL_MIN (2), POOL_MAX (8), MAX_SESSIONS (1000)
                               as in k8s/base/gateway.env: sessions share POOL_MIN..POOL_MAX socket connections,
                               each a cnpg-mcp-server behind socat
  KUBECONFIG, CNPG_NAMESPACES, CNPG_READ_ONLY and the other server settings
  MCP_SOCKET                   the socket path (default: STATE_DIR/mcp.sock)
  CNPG_MCP_STATE_DIR           private directory for the socket (default .run/http, mode 700)
Other arguments go to cnpg-mcp-gateway.
USAGE
}

for arg in "$@"; do
    case $arg in -h|--help) usage; exit 0 ;; esac
done

if [ ! -x .venv/bin/cnpg-mcp-gateway ]; then
    scripts/install
fi
command -v socat >/dev/null || { echo "start-http.sh: socat is missing; run scripts/install" >&2; exit 2; }

state=${CNPG_MCP_STATE_DIR:-.run/http}
mkdir -p "$state"
chmod 700 "$state"
state=$(cd "$state" && pwd)
socket=${MCP_SOCKET:-$state/mcp.sock}

pids=()
stopping=no
stop_all() {
    [ "$stopping" = yes ] && return
    stopping=yes
    if [ "${#pids[@]}" -gt 0 ]; then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    rm -f "$socket"
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap stop_all EXIT

# The server image's entrypoint, with this machine's socket path and the venv's server.
PATH=$root/.venv/bin:$PATH socat "UNIX-LISTEN:$socket,fork,mode=600,unlink-early" EXEC:cnpg-mcp-server < /dev/null &
pids+=("$!")
for _ in $(seq 100); do
    [ -S "$socket" ] && break
    kill -0 "${pids[0]}" 2>/dev/null || { echo "start-http.sh: socat did not start" >&2; exit 1; }
    sleep 0.1
done

# cnpg-mcp-server keeps no per-session state: pool mode, with the ConfigMap's defaults (k8s/base/gateway.env).
UPSTREAM_MODE=${UPSTREAM_MODE:-pool} POOL_MIN=${POOL_MIN:-2} POOL_MAX=${POOL_MAX:-8} \
    MAX_SESSIONS=${MAX_SESSIONS:-1000} \
    .venv/bin/cnpg-mcp-gateway --upstream-socket "$socket" "$@" < /dev/null &
pids+=("$!")
echo "start-http.sh: gateway on http://${HOST:-127.0.0.1}:${PORT:-3000}${MCP_PATH:-/mcp}" \
    "(UPSTREAM_MODE=${UPSTREAM_MODE:-pool}), server behind $socket" >&2

status=0
wait -n "${pids[@]}" || status=$?
stop_all
exit "$status"
