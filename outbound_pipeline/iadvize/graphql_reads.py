"""Read-only GraphQL calls (conversation pages, introspection), retried when the API fails.

A read sends nothing, so unlike the send mutation it may be tried again after any transient
failure: a network error or a timeout (even after the request left), HTTP 429 (honouring
Retry-After) or 5xx, a GraphQL error whose retryPolicy says so. The retries are bounded in number
and each request in time; a refused token triggers one shared re-login.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from outbound_pipeline.iadvize.auth import LoginUnavailable
from outbound_pipeline.iadvize.errors import IAdvizeError, failed_on_its_side, retry_after_seconds
from outbound_pipeline.whatsapp import mask_phones_in

T = TypeVar("T")


class GraphQLClient(Protocol):
    """What a read needs of a client: IAdvizeClient, opened with `async with`, has it."""

    graphql_url: str

    @property
    def http(self) -> httpx.AsyncClient: ...

    async def token(self, refused: str | None = None) -> str: ...


@dataclass(frozen=True)
class ReadPolicy:
    """How hard one read tries: attempts, waits between them, and each request's bound."""

    max_attempts: int = 4
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    timeout_seconds: float = 30.0


class TransientReadError(IAdvizeError):
    """A read that failed on the API's side or on the way; trying again may work."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, transient=True)
        self.retry_after = retry_after


def _errors_text(errors: list[Any]) -> str:
    messages = [str(e.get("message")) if isinstance(e, dict) else str(e) for e in errors[:3]]
    # Variable coercion errors may quote a value: never let a phone number through.
    return mask_phones_in("; ".join(messages))


def _read_body(what: str, response: httpx.Response) -> dict[str, Any]:
    """`data` of a 200 answer, or the error that says why there is none."""
    status = response.status_code
    if failed_on_its_side(status):
        raise TransientReadError(
            f"{what} answered HTTP {status}", retry_after_seconds(response.headers)
        )
    if status != 200:
        raise IAdvizeError(f"{what} answered HTTP {status}")
    try:
        body = response.json()
    except ValueError:
        raise TransientReadError(f"{what} answered HTTP 200 with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise IAdvizeError(f"{what} answered HTTP 200 with a body that is not a JSON object")
    errors = body.get("errors")
    if errors:
        errors = errors if isinstance(errors, list) else [errors]
        retryable = any(
            isinstance(e, dict)
            and str((e.get("extensions") or {}).get("retryPolicy", "")).upper()
            in ("RETRY", "RETRYABLE")
            for e in errors
        )
        message = f"{what} answered GraphQL errors: {_errors_text(errors)}"
        raise TransientReadError(message) if retryable else IAdvizeError(message)
    data = body.get("data")
    if not isinstance(data, dict):
        raise IAdvizeError(f"{what} answered HTTP 200 without data")
    return data


async def _post(
    client: GraphQLClient, payload: dict[str, Any], token: str, timeout: float
) -> httpx.Response:
    return await client.http.post(
        client.graphql_url,
        json=payload,
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
    )


async def _read_once(
    client: GraphQLClient, payload: dict[str, Any], what: str, timeout: float
) -> dict[str, Any]:
    token = await client.token()
    try:
        # asyncio.timeout bounds the request whatever the transport does with httpx's timeout.
        async with asyncio.timeout(timeout):
            response = await _post(client, payload, token, timeout)
            if response.status_code == 401:
                token = await client.token(refused=token)
                response = await _post(client, payload, token, timeout)
    except (httpx.TransportError, TimeoutError) as exc:
        raise TransientReadError(f"{what} failed: {type(exc).__name__}") from None
    if response.status_code == 401:
        raise IAdvizeError(f"{what} refused the token after a new login (HTTP 401)")
    return _read_body(what, response)


def _wait(policy: ReadPolicy) -> Callable[[RetryCallState], float]:
    """Retry-After when the API gave one (bounded), else exponential backoff with jitter."""
    backoff = wait_exponential_jitter(
        initial=policy.backoff_seconds, max=policy.max_backoff_seconds
    )

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), policy.max_backoff_seconds)
        return backoff(state)

    return wait


async def read_graphql(
    client: GraphQLClient,
    payload: dict[str, Any],
    what: str,
    policy: ReadPolicy | None = None,
) -> dict[str, Any]:
    """The `data` of a read-only GraphQL call, retried on transient failures within `policy`;
    IAdvizeError (transient=True when the last try failed on the API's side) when it cannot."""
    policy = policy or ReadPolicy()
    return await retry_read(
        lambda: _read_once(client, payload, what, policy.timeout_seconds), policy
    )


def retryable(exc: BaseException) -> bool:
    """A read's failure that trying again may cure: the API failed or could not be reached. Not a
    login that already waited out its own bound, nor anything refused."""
    return isinstance(exc, IAdvizeError) and exc.transient and not isinstance(exc, LoginUnavailable)


async def retry_read(call: Callable[[], Awaitable[T]], policy: ReadPolicy | None = None) -> T:
    """`call`, a read-only request, tried again on transient failures within `policy`."""
    policy = policy or ReadPolicy()
    retrying = AsyncRetrying(
        retry=retry_if_exception(retryable),
        stop=stop_after_attempt(policy.max_attempts),
        wait=_wait(policy),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
