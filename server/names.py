"""Kubernetes name rules (DNS-1123 labels and subdomains) as plain checks that return the problem or None.

The configuration parser and the tools both use them, so they live below both and import nothing from `server`.
"""

import re

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def validate_dns_label(value: str) -> str | None:
    """None if `value` is a valid DNS-1123 label (namespaces, cluster names), else the reason."""
    if not value:
        return "must not be empty"
    if len(value) > 63:
        return "must be at most 63 characters"
    if not _DNS_LABEL.match(value):
        return "must consist of lower case letters, digits and '-', and start and end with a letter or digit"
    return None


def validate_object_name(value: str) -> str | None:
    """None if `value` is a valid object name (DNS-1123 subdomain), else the reason."""
    if not value or len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        return ("must be a DNS-1123 name (lower case letters, digits, '-' and '.', starting and ending with a "
                "letter or digit, at most 253 characters)")
    return None
