#!/usr/bin/env bash
# Print an access token for the MCP endpoint (client_credentials), and nothing else, for clients that take a
# command or a fixed header. Needs curl, and python3 for JSON.
#
#   MCP_CLIENT_ID=cnpg-ci MCP_CLIENT_SECRET_FILE=~/.cnpg-ci-secret \
#     MCP_UPSTREAM=https://mcp.example.com/mcp scripts/get-token.sh
#
# Settings (environment): MCP_CLIENT_ID, MCP_CLIENT_SECRET or MCP_CLIENT_SECRET_FILE, MCP_CLIENT_AUTH (basic|post,
# default basic), MCP_TOKEN_ENDPOINT (or MCP_UPSTREAM to discover it), MCP_SCOPE, MCP_RESOURCE (default: the
# resource the server publishes; "none" omits it), MCP_AUDIENCE.
# The secret never appears in an argv: curl reads it from its config on stdin.
set -euo pipefail

die() { echo "get-token.sh: $*" >&2; exit 1; }
[ -n "${MCP_CLIENT_ID:-}" ] || die "set MCP_CLIENT_ID"
secret="${MCP_CLIENT_SECRET:-}"
if [ -z "$secret" ] && [ -n "${MCP_CLIENT_SECRET_FILE:-}" ]; then
  secret="$(tr -d '\r\n' < "$MCP_CLIENT_SECRET_FILE")" || die "cannot read MCP_CLIENT_SECRET_FILE"
fi
[ -n "$secret" ] || die "set MCP_CLIENT_SECRET or MCP_CLIENT_SECRET_FILE"

json_field() { python3 -I -S -c 'import json,sys; d=json.load(sys.stdin); v=d.get(sys.argv[1]); print(v[0] if isinstance(v,list) else (v or ""))' "$1"; }
fetch() { curl -fsS --max-time 15 -H 'Accept: application/json' "$1"; }

endpoint="${MCP_TOKEN_ENDPOINT:-}"
resource="${MCP_RESOURCE:-}"
if [ -z "$endpoint" ]; then
  [ -n "${MCP_UPSTREAM:-}" ] || die "set MCP_TOKEN_ENDPOINT or MCP_UPSTREAM"
  origin="$(printf '%s' "$MCP_UPSTREAM" | sed -E 's#^(https?://[^/]+).*#\1#')"
  path="$(printf '%s' "$MCP_UPSTREAM" | sed -E 's#^https?://[^/]+##')"
  prm="$(fetch "$origin/.well-known/oauth-protected-resource$path" 2>/dev/null \
         || fetch "$origin/.well-known/oauth-protected-resource")" || die "no protected resource metadata at $origin"
  issuer="$(printf '%s' "$prm" | json_field authorization_servers)"
  [ -n "$resource" ] || resource="$(printf '%s' "$prm" | json_field resource)"
  [ -n "$issuer" ] || die "the protected resource metadata names no authorization server"
  as_origin="$(printf '%s' "$issuer" | sed -E 's#^(https?://[^/]+).*#\1#')"
  as_path="$(printf '%s' "$issuer" | sed -E 's#^https?://[^/]+##; s#/$##')"
  meta="$(fetch "$as_origin/.well-known/oauth-authorization-server$as_path" 2>/dev/null \
          || fetch "$as_origin/.well-known/openid-configuration$as_path" 2>/dev/null \
          || fetch "$issuer/.well-known/openid-configuration")" || die "cannot reach the identity provider at $as_origin"
  endpoint="$(printf '%s' "$meta" | json_field token_endpoint)"
  [ -n "$endpoint" ] || die "the identity provider publishes no token endpoint"
fi

q() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }
response="$({
  echo "url = \"$(q "$endpoint")\""
  echo 'data-urlencode = "grant_type=client_credentials"'
  if [ -n "${MCP_SCOPE:-}" ]; then echo "data-urlencode = \"scope=$(q "$MCP_SCOPE")\""; fi
  if [ -n "$resource" ] && [ "$resource" != none ]; then echo "data-urlencode = \"resource=$(q "$resource")\""; fi
  if [ -n "${MCP_AUDIENCE:-}" ]; then echo "data-urlencode = \"audience=$(q "$MCP_AUDIENCE")\""; fi
  if [ "${MCP_CLIENT_AUTH:-basic}" = post ]; then
    echo "data-urlencode = \"client_id=$(q "$MCP_CLIENT_ID")\""
    echo "data-urlencode = \"client_secret=$(q "$secret")\""
  else
    echo "user = \"$(q "$MCP_CLIENT_ID"):$(q "$secret")\""
  fi
} | curl -sS --max-time 15 -w '\n%{http_code}' -K -)" || die "cannot reach the token endpoint $endpoint"
status="${response##*$'\n'}"
body="${response%$'\n'*}"
if [ "$status" != 200 ]; then
  error="$(printf '%s' "$body" | json_field error 2>/dev/null || true)"
  [ "$error" = invalid_client ] || [ "$status" = 401 ] && die "the identity provider refused the client credentials ($status ${error:-})"
  die "token request refused ($status ${error:-})"
fi
token="$(printf '%s' "$body" | json_field access_token)"
[ -n "$token" ] || die "the token endpoint answered without an access_token"
printf '%s\n' "$token"
