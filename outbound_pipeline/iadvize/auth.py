"""Password-grant login and the process-wide token cache: one login per token lifetime.

Every client of the process shares the cache, keyed by token URL and username: a run's workers,
and the runs of one process, log in once between them (the API allows 10 logins a minute).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import httpx

from outbound_pipeline.iadvize.errors import IAdvizeError, failed_on_its_side
from outbound_pipeline.iadvize.schema import forget_input_types


@dataclass
class _Token:
    value: str
    expires_at: float  # time.monotonic()


@dataclass
class _TokenCache:
    """Tokens shared by every client of the process: one login per token lifetime."""

    tokens: dict[tuple[str, str], _Token] = field(default_factory=dict)
    logins: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


_TOKEN_CACHE = _TokenCache()


def login_count() -> int:
    """Logins made by this process (tests and metadata)."""
    return _TOKEN_CACHE.logins


def forget_tokens() -> None:
    """Drop cached tokens (tests that start a fresh sandbox)."""
    with _TOKEN_CACHE.lock:
        _TOKEN_CACHE.tokens.clear()
    forget_input_types()


class TokenKeeper:
    """One client's access to the shared token: it logs in when there is none, when it nears
    expiry, or when the API refused it."""

    def __init__(
        self, token_url: str, username: str, password: str, renew_margin_seconds: float
    ) -> None:
        self.token_url = token_url
        self._credentials = (username, password)
        self._cache_key = (token_url, username)
        self._renew_margin_seconds = renew_margin_seconds
        self._login_lock = asyncio.Lock()
        # A failed login is not tried again by this client: its run stops on the first failure, and
        # each attempt with a refused password counts toward the API's 10 logins a minute.
        self._login_failed: IAdvizeError | None = None

    def _cached_token(self) -> str | None:
        with _TOKEN_CACHE.lock:
            token = _TOKEN_CACHE.tokens.get(self._cache_key)
        if token and token.expires_at - self._renew_margin_seconds > time.monotonic():
            return token.value
        return None

    async def token(self, http: httpx.AsyncClient, refused: str | None = None) -> str:
        """The shared token; log in when there is none, it nears expiry, or `refused` was it."""
        current = self._cached_token()
        if current is not None and current != refused:
            return current
        async with self._login_lock:
            # Another task may have logged in while this one waited: one 401 storm, one login.
            current = self._cached_token()
            if current is not None and current != refused:
                return current
            if self._login_failed is not None:
                failed = self._login_failed
                raise IAdvizeError(str(failed), transient=failed.transient)
            try:
                return await self._login(http)
            except IAdvizeError as exc:
                self._login_failed = exc
                raise

    async def _login(self, http: httpx.AsyncClient) -> str:
        username, password = self._credentials
        try:
            response = await http.post(
                self.token_url,
                data={"username": username, "password": password, "grant_type": "password"},
            )
        except httpx.HTTPError as exc:
            raise IAdvizeError(
                f"login to {self.token_url} failed: {type(exc).__name__}", transient=True
            ) from None
        value, lifetime = _read_token(response, self.token_url)
        token = _Token(value, time.monotonic() + lifetime)
        with _TOKEN_CACHE.lock:
            _TOKEN_CACHE.tokens[self._cache_key] = token
            _TOKEN_CACHE.logins += 1
        return token.value


def _read_token(response: httpx.Response, token_url: str) -> tuple[str, float]:
    """(access token, lifetime in seconds) from the token endpoint's answer, or why not."""
    if failed_on_its_side(response.status_code):
        raise IAdvizeError(
            f"login to {token_url} answered HTTP {response.status_code}", transient=True
        )
    if response.status_code != 200:
        raise IAdvizeError(
            f"login to {token_url} refused with HTTP {response.status_code}; check "
            "IADVIZE_USERNAME / IADVIZE_PASSWORD (logins are limited to 10 per minute)"
        )
    # The error quotes nothing of the body: a body half readable may still hold the token.
    try:
        body = response.json()
        value, lifetime = body["access_token"], float(body.get("expires_in", 3600))
    except (ValueError, TypeError, KeyError, AttributeError):
        raise IAdvizeError(
            f"login to {token_url} answered HTTP 200 without a readable access_token "
            f"({response.headers.get('content-type') or 'no content type'})"
        ) from None
    if not isinstance(value, str) or not value:
        raise IAdvizeError(
            f"login to {token_url} answered HTTP 200 without a readable access_token"
        )
    return value, lifetime
