"""The bundled sandbox of the iAdvize API: the default target, so a fresh checkout sends nothing real.

create_app builds it as an ASGI app (app.py: the endpoints; state.py: what it knows and its
/_sandbox/config settings; graphql.py, message_rules.py, responses.py: how it answers; faults.py:
the faults it can inject; logins.py: iAdvize's login policy); in_process_app is the one the iadvize resource calls in process;
SandboxServer and serve put it on a port (server.py), as `python -m outbound_pipeline.sandbox` does.
"""

from __future__ import annotations

from outbound_pipeline.sandbox.app import create_app, in_process_app
from outbound_pipeline.sandbox.faults import FaultConfig
from outbound_pipeline.sandbox.logins import most_in_window
from outbound_pipeline.sandbox.server import SandboxServer, serve
from outbound_pipeline.sandbox.state import SandboxState

__all__ = [
    "FaultConfig",
    "SandboxServer",
    "SandboxState",
    "create_app",
    "in_process_app",
    "most_in_window",
    "serve",
]
