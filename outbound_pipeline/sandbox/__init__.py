"""The bundled sandbox of the iAdvize API: the default target, so a fresh checkout sends nothing real."""

from __future__ import annotations

from functools import lru_cache

from starlette.applications import Starlette

from outbound_pipeline.sandbox.app import SandboxState, create_app
from outbound_pipeline.sandbox.faults import FaultConfig
from outbound_pipeline.sandbox.server import SandboxServer, serve

__all__ = ["FaultConfig", "SandboxServer", "SandboxState", "create_app", "in_process_app", "serve"]


@lru_cache(maxsize=8)
def in_process_app(config_path: str | None = None) -> Starlette:
    """One sandbox per process and configuration (for httpx.ASGITransport): its tokens outlive a
    single client, as a real server's would."""
    from outbound_pipeline.config import load_config

    return create_app(load_config(config_path).templates)
