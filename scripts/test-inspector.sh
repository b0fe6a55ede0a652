#!/usr/bin/env bash
# Drive the MCP Inspector CLI (npm @modelcontextprotocol/inspector, run with the project's Node 22) against the
# server: list its tools, resources, resource templates and prompts, over HTTP through the gateway with a bearer
# token, or over stdio with cnpg-mcp-server. The token goes to the Inspector in a private config file (mode 600,
# removed on exit), never in a command line, so no other process's argv shows it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

usage() {
    cat <<'USAGE'
Usage: scripts/test-inspector.sh --transport http|stdio [--url URL] [--token TOKEN | --token-file FILE]

  --transport http   the gateway's MCP endpoint, --url (default http://127.0.0.1:3000/mcp), with a bearer token
                     from --token-file FILE (preferred), --token TOKEN or the MCP_TOKEN variable; none: no token
  --transport stdio  cnpg-mcp-server from the venv, with the environment's KUBECONFIG and CNPG_* settings
Prints each list as the Inspector's JSON; exits non-zero when any call fails.
USAGE
}

transport=""
url="http://127.0.0.1:3000/mcp"
token=${MCP_TOKEN:-}
token_file=""
while [ $# -gt 0 ]; do
    case $1 in
        --transport) transport=${2:?--transport needs http or stdio}; shift 2 ;;
        --url) url=${2:?--url needs a value}; shift 2 ;;
        --token) token=${2:?--token needs a value}; shift 2 ;;
        --token-file) token_file=${2:?--token-file needs a path}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "test-inspector.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
case $transport in
    http|stdio) ;;
    *) echo "test-inspector.sh: --transport must be http or stdio" >&2; usage >&2; exit 2 ;;
esac
if [ -n "$token_file" ]; then
    [ -r "$token_file" ] || { echo "test-inspector.sh: cannot read $token_file" >&2; exit 2; }
    token=$(tr -d '\r\n' < "$token_file")
fi

node=$root/tools/node/node_modules/.bin/node
inspector=$root/tools/node/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js
if [ ! -x "$node" ] || [ ! -f "$inspector" ] || [ ! -x .venv/bin/python ]; then
    scripts/install
fi

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
chmod 700 "$workdir"
config=$workdir/mcp.json
# The config is written by Python from the environment, so the token passes through no command line.
(
    umask 077
    TRANSPORT=$transport URL=$url TOKEN=$token SERVER=$root/.venv/bin/cnpg-mcp-server .venv/bin/python -c '
import json, os, sys
if os.environ["TRANSPORT"] == "http":
    server = {"type": "streamable-http", "url": os.environ["URL"]}
    if os.environ["TOKEN"]:
        server["headers"] = {"Authorization": "Bearer " + os.environ["TOKEN"]}
else:
    server = {"type": "stdio", "command": os.environ["SERVER"], "args": [], "env": {
        k: v for k, v in os.environ.items() if k == "KUBECONFIG" or k.startswith("CNPG_")}}
json.dump({"mcpServers": {"cnpg": server}}, sys.stdout)
' > "$config"
)
unset token

status=0
for method in tools/list resources/list resources/templates/list prompts/list; do
    echo "== $method"
    # HOME points at the private directory: the Inspector keeps its catalog and logs under it.
    if ! HOME=$workdir MCP_INSPECTOR_SECRET_STORE=memory "$node" "$inspector" --cli --config "$config" --server cnpg --method "$method"; then
        echo "test-inspector.sh: $method failed" >&2
        status=1
    fi
done
exit "$status"
