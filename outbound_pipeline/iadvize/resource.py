"""The iadvize resource: what Dagster configures, and the one place that knows the mode.

In sandbox mode without URLs the client talks to the bundled sandbox in process; with URLs it talks
to whatever serves them (a sandbox on a loopback port, or the real API in live mode). The resource
turns that choice into the client's settings and transport, so the client never imports the sandbox.
"""

from __future__ import annotations

import os
from typing import Literal

import dagster as dg
import httpx
from pydantic import Field

from outbound_pipeline.iadvize.auth import LOGIN_WAIT_SECONDS, PROCESS_LOGINS_PER_MINUTE, LoginSlots
from outbound_pipeline.iadvize.client import ClientSettings, IAdvizeClient
from outbound_pipeline.iadvize.errors import IAdvizeError

SANDBOX_BASE_URL = "http://sandbox.invalid"
LIVE_SETTINGS = ("IADVIZE_GRAPHQL_URL", "IADVIZE_TOKEN_URL", "IADVIZE_USERNAME", "IADVIZE_PASSWORD")


def missing_live_settings(env: dict[str, str] | None = None) -> list[str]:
    """The live-mode environment variables that are unset or empty."""
    env = dict(os.environ) if env is None else env
    return [name for name in LIVE_SETTINGS if not env.get(name)]


class IAdvizeResource(dg.ConfigurableResource):
    """iAdvize GraphQL API (or its bundled sandbox): token login and whatsAppOutboundMessageSend."""

    mode: Literal["sandbox", "live"] = Field(
        default="sandbox",
        description="sandbox: the bundled fake API, no real message; live: iAdvize.",
    )
    graphql_url: str | None = Field(
        default=None, description="GraphQL endpoint; empty in sandbox mode: in process."
    )
    token_url: str | None = Field(default=None, description="OAuth2 token endpoint.")
    username: str | None = None
    password: str | None = Field(default=None, description="Set with dg.EnvVar; never logged.")
    input_type_name: str | None = Field(
        default=None,
        description="GraphQL input type of the mutation (IADVIZE_INPUT_TYPE); read by "
        "introspection when empty.",
    )
    config_path: str | None = Field(
        default=None, description="Templates for the in-process sandbox."
    )
    timeout_seconds: float = Field(default=15.0, gt=0, description="Read timeout of one call.")
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    token_renew_margin_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Renew the token this long before it ends, at most a fifth of its lifetime.",
    )
    logins_per_minute: int = Field(
        default=PROCESS_LOGINS_PER_MINUTE,
        ge=1,
        description="Logins a minute all runs of this user share (state store's login slots); "
        "iAdvize allows 10, the rest is left to other tools.",
    )
    login_wait_seconds: float = Field(
        default=LOGIN_WAIT_SECONDS,
        gt=0,
        description="The longest a run waits for a login (a free slot, a throttled or failing "
        "token endpoint) before it fails.",
    )
    transport: Literal["aiohttp", "httpx"] = Field(
        default="aiohttp",
        description="aiohttp sustains several times the call rate of httpx's own.",
    )

    @property
    def is_sandbox(self) -> bool:
        return self.mode == "sandbox"

    @property
    def in_process(self) -> bool:
        return self.is_sandbox and not self.graphql_url

    def describe(self) -> str:
        if self.in_process:
            return "sandbox (in process): no real message is sent"
        if self.is_sandbox:
            return f"sandbox at {self.graphql_url}: no real message is sent"
        return f"LIVE iAdvize at {self.graphql_url}"

    def validate_settings(self) -> None:
        if self.mode == "live":
            values = (self.graphql_url, self.token_url, self.username, self.password)
            missing = [name for name, value in zip(LIVE_SETTINGS, values, strict=True) if not value]
            if missing:
                raise IAdvizeError(
                    "IADVIZE_MODE=live needs "
                    + ", ".join(missing)
                    + "; set them, or unset IADVIZE_MODE "
                    "to use the sandbox (live mode never falls back to it)"
                )
        elif bool(self.graphql_url) != bool(self.token_url):
            raise IAdvizeError("set both IADVIZE_GRAPHQL_URL and IADVIZE_TOKEN_URL, or neither")

    def client(
        self, max_connections: int = 64, login_slots: LoginSlots | None = None
    ) -> IAdvizeClient:
        """An async client for one event loop; use it as `async with`. `login_slots`: the state
        store's (`ledger.StoreLoginSlots`), shared by every process; None: this process's own."""
        self.validate_settings()
        return IAdvizeClient(
            self.client_settings(), self.http_transport(max_connections), login_slots
        )

    def client_settings(self) -> ClientSettings:
        """URLs, credentials and timeouts of the client; the in-process sandbox takes any login."""
        timeout = httpx.Timeout(
            self.timeout_seconds, connect=self.connect_timeout_seconds, pool=None
        )
        if self.in_process:
            graphql_url = f"{SANDBOX_BASE_URL}/graphql"
            token_url = f"{SANDBOX_BASE_URL}/oauth2/token"
            username, password = "sandbox", "sandbox"
        else:
            graphql_url, token_url = str(self.graphql_url), str(self.token_url)
            username, password = self.username or "sandbox", self.password or "sandbox"
        return ClientSettings(
            graphql_url=graphql_url,
            token_url=token_url,
            username=username,
            password=password,
            timeout=timeout,
            input_type_name=self.input_type_name,
            token_renew_margin_seconds=self.token_renew_margin_seconds,
            login_wait_seconds=self.login_wait_seconds,
        )

    def http_transport(self, max_connections: int) -> httpx.AsyncBaseTransport:
        """The in-process sandbox's ASGI app, or a pool of at most `max_connections` connections."""
        if self.in_process:
            # Imported here only: the sandbox (starlette, graphql-core) loads in sandbox mode alone.
            from outbound_pipeline.sandbox import in_process_app

            return httpx.ASGITransport(app=in_process_app(self.config_path))
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        if self.transport == "aiohttp":
            from httpx_aiohttp import AiohttpTransport

            return AiohttpTransport(limits=limits)
        return httpx.AsyncHTTPTransport(limits=limits)
