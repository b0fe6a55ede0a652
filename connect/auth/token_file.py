"""The simplest mode: a bearer token kept in a file by something else, re-read whenever the file changes."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator
from pathlib import Path

import anyio
import httpx2

from connect.errors import ConnectError

log = logging.getLogger("connect.auth")


class TokenFileAuth(httpx2.Auth):
    """Adds the token from `path`; after a 401 it re-reads the file once and retries if the token changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._token = ""
        self._lock = anyio.Lock()

    def _read(self, force: bool = False) -> str:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            raise ConnectError("token_file", f"cannot read the token file {self.path}: {exc.strerror}") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if force or stamp != self._stamp:
            token = self.path.read_text().strip()
            if not token:
                raise ConnectError("token_file", f"the token file {self.path} is empty")
            if token != self._token and self._token:
                log.info("token file changed, using the new token")
            self._token, self._stamp = token, stamp
        return self._token

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        async with self._lock:
            token = self._read()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            async with self._lock:
                fresh = self._read(force=True)
            if fresh != token:
                request.headers["Authorization"] = f"Bearer {fresh}"
                yield request
            else:
                log.warning("the server refused the token from %s (401) and the file has no newer one", self.path)
