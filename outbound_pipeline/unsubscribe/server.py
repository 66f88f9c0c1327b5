"""Serve the endpoint with uvicorn: in a background thread (tests) or blocking (the command).

uvicorn's access log would print every path, token included. `access_log=False` alone does not
keep it quiet: uvicorn writes access lines whenever its logger has a handler, and a deployment's
logging setup (or pytest) may give it one. So its access and ASGI-trace loggers drop every record,
and the app logs one redacted line per request instead.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

_START_TIMEOUT_SECONDS = 10.0
# h11's bound on a request head that arrives in pieces (the app bounds a whole one too).
MAX_REQUEST_HEAD_BYTES = 8192
# uvicorn's loggers whose records hold request paths, hence tokens.
_PATH_LOGGERS = ("uvicorn.access", "uvicorn.asgi")


class _DropEverything(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def silence_path_loggers() -> None:
    """Make uvicorn's access and ASGI-trace loggers drop every record, whatever their handlers (in
    this process: the sandbox and the endpoint are the only uvicorn servers it runs)."""
    for name in _PATH_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropEverything) for f in logger.filters):
            logger.addFilter(_DropEverything())


@dataclass(frozen=True)
class ServerOptions:
    """How uvicorn serves the endpoint (see `python -m outbound_pipeline.unsubscribe --help`)."""

    proxy_headers: bool = True
    forwarded_allow_ips: str = "127.0.0.1"
    limit_concurrency: int = 200
    timeout_keep_alive: int = 5
    log_level: str = "info"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), bound before uvicorn starts so that
    the caller knows the address it serves."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_server(app: ASGIApp, options: ServerOptions) -> uvicorn.Server:
    silence_path_loggers()
    config = uvicorn.Config(
        app,
        http="h11",
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
        lifespan="off",
        access_log=False,
        log_config=None,  # leave logging to the caller (the command, or pytest's capture)
        log_level=options.log_level,
        proxy_headers=options.proxy_headers,
        forwarded_allow_ips=options.forwarded_allow_ips,
        limit_concurrency=options.limit_concurrency,
        timeout_keep_alive=options.timeout_keep_alive,
        server_header=False,
        date_header=False,
    )
    return uvicorn.Server(config)


def serve(
    app: ASGIApp,
    host: str,
    port: int,
    options: ServerOptions | None = None,
    on_started: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted (Ctrl+C); `on_started` gets the URL once the port is bound."""
    sock = bind(host, port)
    if on_started is not None:
        on_started(url_of(sock))
    uvicorn_server(app, options or ServerOptions()).run(sockets=[sock])


class EndpointThread:
    """`with EndpointThread(app) as endpoint:` serves the app on 127.0.0.1 at a free port in a
    background thread; `endpoint.base_url` is where."""

    def __init__(
        self, app: ASGIApp, host: str = "127.0.0.1", options: ServerOptions | None = None
    ) -> None:
        self._socket = bind(host, 0)
        self.base_url = url_of(self._socket)
        self._server = uvicorn_server(app, options or ServerOptions())
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> EndpointThread:
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the unsubscribe endpoint did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._socket.close()
