"""OIDC bearer-token authentication for the gateway."""
