"""`WWW-Authenticate: Bearer` challenges (RFC 6750 section 3, RFC 9728 section 5.1).

Attribute values are quoted-strings. RFC 6750 restricts error, error_description and scope to printable ASCII
without double quote and backslash, so values are cleaned to that set first; the quoting still escapes both
characters so the header stays parseable whatever a caller passes.
"""

from __future__ import annotations

import re

_NOT_ALLOWED = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def _clean(value: str) -> str:
    return _NOT_ALLOWED.sub("?", value)


def quote(value: str) -> str:
    """Render `value` as an RFC 9110 quoted-string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def bearer_challenge(
    *,
    resource_metadata: str,
    error: str | None = None,
    description: str | None = None,
    scope: str | None = None,
) -> str:
    """Build the header value.

    Without `error` (no credentials were sent) the challenge only points at the metadata, as RFC 6750 section 3.1
    asks; with it, error and error_description say what was wrong and scope what would have been enough.
    """
    params: list[tuple[str, str]] = []
    if error:
        params.append(("error", error))
        if description:
            params.append(("error_description", description))
    if scope:
        params.append(("scope", scope))
    # resource_metadata is a URL built by us, but it may embed a Host header value: clean it like the rest.
    params.append(("resource_metadata", resource_metadata))
    return "Bearer " + ", ".join(f"{name}={quote(_clean(value))}" for name, value in params)
