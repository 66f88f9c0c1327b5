"""Password-grant login and the process-wide token cache: logins shared, spaced and bounded.

iAdvize allows 10 logins a minute per user and blocks logins for a while beyond. So:

- every client of the process shares one token per (token URL, username), and one login at a time
  happens for it in the process (a 401 seen by many workers gives one re-login);
- before each login the process takes a login slot (`LoginSlots`): the state store's slots
  (ledger.StoreLoginSlots) share the user's budget with every other process and host; without a
  store, a budget of this process alone (`MemoryLoginSlots`) still prevents a login storm;
- a token is renewed in the background once it nears its end (a margin of at most a fifth of its
  lifetime, so a short-lived token never causes a login per call), while the current one still
  serves the calls;
- a login the API failed or throttled (network error, 429, 5xx) is tried again at the next slot,
  with backoff (Retry-After honoured), for at most `wait_seconds` (10 min by default): then
  `LoginUnavailable`; refused credentials (400, 401) fail at once, naming the settings to fix.

The token never leaves the process: it is never stored, logged or put in an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from outbound_pipeline.iadvize.errors import IAdvizeError, failed_on_its_side, retry_after_seconds
from outbound_pipeline.iadvize.schema import forget_input_types

# The longest a process waits for a usable login (slots and the API's refusals together).
LOGIN_WAIT_SECONDS = 600.0
# Renewal starts this long before expiry, at most; never more than a fifth of the token's life.
RENEW_MARGIN_SECONDS = 300.0
LOGIN_BACKOFF_SECONDS = 1.0
LOGIN_BACKOFF_MAX_SECONDS = 30.0
# Logins a minute per user the pipeline allows itself: all its processes together through the state
# store's slots (the iadvize resource's logins_per_minute), a process alone without a store. iAdvize
# allows 10: 2 are left for what logs in outside the runs (a preflight from a laptop, a script).
PROCESS_LOGINS_PER_MINUTE = 8


class LoginSlots(Protocol):
    """Where a process takes a login slot before logging in (one per login)."""

    budget: int  # logins per window
    window: float  # seconds

    def try_take(self, user_key: str) -> float | None:
        """A slot taken now (None), or the seconds until one frees (nothing taken)."""
        ...


class LoginUnavailable(IAdvizeError):
    """No token within the login bound: the API kept failing or throttling logins, or no slot
    freed. Transient (a later run may log in), and not to be retried again by the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class _BusyLogin(IAdvizeError):
    """The token endpoint failed or throttled this login: try again later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, transient=True)
        self.retry_after = retry_after


def repeat_failure(failed: IAdvizeError) -> IAdvizeError:
    """The same failure for another caller (a new exception: no traceback piles up)."""
    if isinstance(failed, LoginUnavailable):
        return LoginUnavailable(str(failed))
    return IAdvizeError(str(failed), transient=failed.transient)


def user_key(token_url: str, username: str) -> str:
    """The key of one API user's login budget: never the username in clear."""
    return hashlib.sha256(f"{token_url}\n{username}".encode()).hexdigest()


def renew_margin(lifetime: float, cap: float = RENEW_MARGIN_SECONDS) -> float:
    """How long before its end a token is renewed: `cap`, bounded by a fifth of its lifetime."""
    return max(0.0, min(cap, lifetime / 5))


class MemoryLoginSlots:
    """Login slots of this process alone, for a client without a state store."""

    def __init__(self, budget: int = PROCESS_LOGINS_PER_MINUTE, window: float = 60.0) -> None:
        self.budget = budget
        self.window = window
        self._taken: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def try_take(self, user_key: str) -> float | None:
        now = time.monotonic()
        with self._lock:
            taken = self._taken.setdefault(user_key, deque())
            while taken and taken[0] <= now - self.window:
                taken.popleft()
            if len(taken) >= self.budget:
                return max(0.05, taken[0] + self.window - now)
            taken.append(now)
            return None

    def clear(self) -> None:
        with self._lock:
            self._taken.clear()


@dataclass
class _Token:
    value: str
    renew_at: float  # time.monotonic(): renewed in the background from then
    usable_until: float  # time.monotonic(): after this, callers wait for a new one


@dataclass
class _TokenCache:
    """Tokens shared by every client of the process, and one login lock per user."""

    tokens: dict[tuple[str, str], _Token] = field(default_factory=dict)
    logins: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    login_locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    slots: MemoryLoginSlots = field(default_factory=MemoryLoginSlots)

    def login_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self.lock:
            return self.login_locks.setdefault(key, threading.Lock())


_TOKEN_CACHE = _TokenCache()


def login_count() -> int:
    """Logins made by this process (tests and metadata)."""
    return _TOKEN_CACHE.logins


def forget_tokens() -> None:
    """Drop cached tokens and this process's login budget (tests that start a fresh sandbox)."""
    with _TOKEN_CACHE.lock:
        _TOKEN_CACHE.tokens.clear()
    _TOKEN_CACHE.slots.clear()
    forget_input_types()


@contextlib.asynccontextmanager
async def _process_login(key: tuple[str, str]) -> AsyncIterator[None]:
    """One login at a time per user in the process, across event loops and threads (polled, so a
    cancelled waiter never leaves the lock taken)."""
    lock = _TOKEN_CACHE.login_lock(key)
    while not lock.acquire(blocking=False):
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        lock.release()


@dataclass(frozen=True)
class LoginPolicy:
    """How a TokenKeeper logs in: renewal margin (cap), wait bound, slots (None: the process's)."""

    renew_margin_seconds: float = RENEW_MARGIN_SECONDS
    wait_seconds: float = LOGIN_WAIT_SECONDS
    slots: LoginSlots | None = None


class TokenKeeper:
    """One client's access to the shared token: logs in when there is none usable or the API
    refused it, renews it in the background as it nears its end."""

    def __init__(
        self, token_url: str, username: str, password: str, policy: LoginPolicy | None = None
    ) -> None:
        self.token_url = token_url
        self._credentials = (username, password)
        self._cache_key = (token_url, username)
        self._user_key = user_key(token_url, username)
        self._policy = policy or LoginPolicy()
        self._slots: LoginSlots = self._policy.slots or _TOKEN_CACHE.slots
        self._login_lock = asyncio.Lock()
        self._renewal: asyncio.Task[None] | None = None
        # Refused credentials are not tried again by this client: each attempt counts toward the
        # API's login limit, and repeated refusals lock the account.
        self._login_failed: IAdvizeError | None = None

    def _cached(self, refused: str | None, renewing: bool = False) -> str | None:
        """The cached token if it serves: not the one refused, not past its use, and for a renewal
        not yet due (another client renewed it)."""
        with _TOKEN_CACHE.lock:
            token = _TOKEN_CACHE.tokens.get(self._cache_key)
        now = time.monotonic()
        if token is None or token.value == refused or now >= token.usable_until:
            return None
        if renewing and now >= token.renew_at:
            return None
        return token.value

    async def token(self, http: httpx.AsyncClient, refused: str | None = None) -> str:
        """The shared token; log in when none is usable or `refused` was it."""
        token = _TOKEN_CACHE.tokens.get(self._cache_key)  # a dict read: atomic, no lock per call
        now = time.monotonic()
        if token is not None and token.value != refused and now < token.usable_until:
            if now >= token.renew_at:
                self._renew_in_background(http)
            return token.value
        return await self._fresh(http, refused)

    def _renew_in_background(self, http: httpx.AsyncClient) -> None:
        if self._renewal is None or self._renewal.done():
            self._renewal = asyncio.create_task(self._renew(http))

    async def _renew(self, http: httpx.AsyncClient) -> None:
        # A failed renewal is not an error yet: the current token still serves, and the caller that
        # finds none usable logs in itself and meets the error (or the state store's) then.
        with contextlib.suppress(Exception):
            await self._fresh(http, None, renewing=True)

    async def close(self) -> None:
        """Stop a background renewal (the client is closing)."""
        if self._renewal is not None and not self._renewal.done():
            self._renewal.cancel()
            await asyncio.gather(self._renewal, return_exceptions=True)

    async def _fresh(
        self, http: httpx.AsyncClient, refused: str | None, renewing: bool = False
    ) -> str:
        async with self._login_lock:  # this client's tasks: one login between them
            if (current := self._cached(refused, renewing)) is not None:
                return current
            if self._login_failed is not None:
                raise repeat_failure(self._login_failed)
            async with _process_login(self._cache_key):  # the other clients of the process
                if (current := self._cached(refused, renewing)) is not None:
                    return current
                try:
                    return await self._login_within_bound(http)
                except IAdvizeError as exc:
                    # Refused, or the bound already waited out: this client's run stops, and its
                    # other workers must not wait the bound again each.
                    if not exc.transient or isinstance(exc, LoginUnavailable):
                        self._login_failed = exc
                    raise

    async def _login_within_bound(self, http: httpx.AsyncClient) -> str:
        """Log in at the next free slot; a failed or throttled login again at the next one, with
        backoff, until `wait_seconds` have passed."""
        bound = self._policy.wait_seconds
        deadline = time.monotonic() + bound
        attempt = 0
        while True:
            await self._wait_for_slot(deadline)
            try:
                return await self._login(http)
            except _BusyLogin as exc:
                attempt += 1
                delay = exc.retry_after
                if delay is None:
                    delay = min(
                        LOGIN_BACKOFF_MAX_SECONDS, LOGIN_BACKOFF_SECONDS * 2 ** (attempt - 1)
                    )
                if time.monotonic() + delay > deadline:
                    raise LoginUnavailable(
                        f"{exc}; no login succeeded within {bound:g} s ({attempt} attempts): this "
                        "run stops, runs holding a valid token go on sending"
                    ) from None
                await asyncio.sleep(delay * (0.75 + random.random() / 2))

    async def _wait_for_slot(self, deadline: float) -> None:
        while True:
            wait = await asyncio.to_thread(self._slots.try_take, self._user_key)
            if wait is None:
                return
            if time.monotonic() + wait > deadline:
                raise LoginUnavailable(
                    f"login to {self.token_url}: no login slot free within "
                    f"{self._policy.wait_seconds:g} s (the user's budget, {self._slots.budget} "
                    f"logins per {self._slots.window:g} s, is spent by other runs)"
                )
            # Jitter: the processes that wait for the same slot do not all ask at once.
            await asyncio.sleep(wait + random.random() * 0.25)

    async def _login(self, http: httpx.AsyncClient) -> str:
        username, password = self._credentials
        try:
            response = await http.post(
                self.token_url,
                data={"username": username, "password": password, "grant_type": "password"},
            )
        except httpx.HTTPError as exc:
            raise _BusyLogin(f"login to {self.token_url} failed: {type(exc).__name__}") from None
        value, lifetime = _read_token(response, self.token_url)
        now = time.monotonic()
        margin = renew_margin(lifetime, self._policy.renew_margin_seconds)
        # Calls stop using a token a moment before its end: one sent as it expires gets a 401.
        token = _Token(value, now + lifetime - margin, now + lifetime - min(1.0, lifetime / 10))
        with _TOKEN_CACHE.lock:
            _TOKEN_CACHE.tokens[self._cache_key] = token
            _TOKEN_CACHE.logins += 1
        return token.value


def _read_token(response: httpx.Response, token_url: str) -> tuple[str, float]:
    """(access token, lifetime in seconds) from the token endpoint's answer, or why not."""
    status = response.status_code
    if failed_on_its_side(status):
        raise _BusyLogin(
            f"login to {token_url} answered HTTP {status}", retry_after_seconds(response.headers)
        )
    if status in (400, 401):
        raise IAdvizeError(
            f"login to {token_url} refused with HTTP {status}: the credentials are wrong; check "
            "IADVIZE_USERNAME and IADVIZE_PASSWORD"
        )
    if status != 200:
        raise IAdvizeError(
            f"login to {token_url} refused with HTTP {status}; check IADVIZE_TOKEN_URL, "
            "IADVIZE_USERNAME and IADVIZE_PASSWORD"
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
    return value, max(0.0, lifetime)
