"""Serve the sandbox on a port: in a background thread (tests, demo) or blocking (the CLI)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import uvicorn

from outbound_pipeline.config import Template
from outbound_pipeline.sandbox.app import create_app
from outbound_pipeline.sandbox.responses import SandboxConnectionDrop
from outbound_pipeline.sandbox.state import SandboxState

_START_TIMEOUT_SECONDS = 10.0
_GRACE_SECONDS = 1.0  # in-flight requests get this long to finish when the server stops


class _IntentionalDropFilter(logging.Filter):
    """uvicorn logs a traceback for every exception an app raises; the sandbox raises one on purpose
    for each `drop_after_accept` fault, which would flood test output. Only that class is hidden."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], SandboxConnectionDrop))


def _quiet_intentional_drops() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _IntentionalDropFilter) for f in logger.filters):
        logger.addFilter(_IntentionalDropFilter())


class _Server(uvicorn.Server):
    """A uvicorn server that reports the URL it actually bound (port 0 picks a free one)."""

    def __init__(
        self, config: uvicorn.Config, on_started: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(config)
        self._on_started = on_started
        self.base_url = ""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.servers and self.servers[0].sockets:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            host = f"[{host}]" if ":" in host else host
            self.base_url = f"http://{host}:{port}"
            if self._on_started is not None:
                self._on_started(self.base_url)


def _uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        # Defaults for a loopback test server that sees a few thousand requests per second.
        backlog=2048,
        timeout_keep_alive=30,
    )
    _quiet_intentional_drops()
    return config


class SandboxServer:
    """`with SandboxServer(templates, **create_app_kwargs) as sandbox:` serves the sandbox on
    127.0.0.1 at a free port, in a background thread, and reads and steers it over HTTP."""

    def __init__(
        self,
        templates: Iterable[Template],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **app_kwargs: Any,
    ) -> None:
        self.app = create_app(list(templates), **app_kwargs)
        self._server = _Server(_uvicorn_config(self.app, host, port))
        self._thread = threading.Thread(
            target=self._server.run, name="sandbox-iadvize", daemon=True
        )

    @property
    def state(self) -> SandboxState:
        """Direct access to the sandbox's state (same process); the HTTP helpers below go through
        the admin endpoints like any other client would."""
        return self.app.state.sandbox

    def start(self) -> SandboxServer:
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the sandbox server failed to start (is the port in use?)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the sandbox server did not start within {_START_TIMEOUT_SECONDS:g} s"
                )
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving; requests still in flight (a hanging fault) are cut after a short grace."""
        if not self._thread.is_alive():
            return
        self._server.should_exit = True
        self._thread.join(timeout=_GRACE_SECONDS)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=10)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if not self._server.base_url:
            raise RuntimeError("the sandbox server is not started")
        return self._server.base_url

    @property
    def graphql_url(self) -> str:
        return f"{self.base_url}/graphql"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth2/token"

    def _get(self, path: str) -> Any:
        response = httpx.get(f"{self.base_url}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.post(f"{self.base_url}{path}", json=body or {}, timeout=30)
        if response.status_code == 400:
            raise ValueError(f"the sandbox refused {path}: {response.text}")
        response.raise_for_status()
        return response.json()

    def messages(self) -> list[dict[str, Any]]:
        """Every message the sandbox accepted, oldest first."""
        return self._get("/_sandbox/messages")

    def stats(self) -> dict[str, Any]:
        return self._get("/_sandbox/stats")

    def configure(self, **settings: Any) -> None:
        """latency_ms, faults (a dict or FaultConfig), token_ttl_seconds, enforce_pair_rate_seconds."""
        faults = settings.get("faults")
        if faults is not None and hasattr(faults, "model_dump"):
            settings["faults"] = faults.model_dump()
        self._post("/_sandbox/config", settings)

    def reset(self) -> None:
        self._post("/_sandbox/reset")

    def expire_tokens(self) -> None:
        self._post("/_sandbox/expire-tokens")


def serve(
    host: str,
    port: int,
    templates: Iterable[Template],
    *,
    on_started: Callable[[str], None] | None = None,
    **app_kwargs: Any,
) -> None:
    """Serve the sandbox until interrupted (Ctrl+C); `on_started` gets the URL once it listens."""
    app = create_app(list(templates), **app_kwargs)
    _Server(_uvicorn_config(app, host, port), on_started).run()
