"""Unsubscribe: signed per-recipient links, the pipeline's own suppression list, and the endpoint
that records an opt-out the moment a recipient confirms it.

links.py makes and reads the links (itsdangerous, a secret from the environment); suppressions.py
is the list (`outbound_suppressions`, on a MetaData of its own for the state store) and its plain
functions; app.py is the ASGI endpoint (pages.py its fixed pages, ratelimit.py its per-client
rate); server.py serves it, as `python -m outbound_pipeline.unsubscribe` does.
"""

from __future__ import annotations

from outbound_pipeline.unsubscribe.app import create_app
from outbound_pipeline.unsubscribe.links import (
    MAX_TOKEN_LENGTH,
    OLD_SECRETS_ENV,
    SECRET_ENV,
    InvalidToken,
    UnsubscribeSecretError,
    link_maker,
    read_token,
    secret_from_env,
    unsubscribe_link,
    unsubscribe_token,
    verifying_secrets_from_env,
)
from outbound_pipeline.unsubscribe.ratelimit import RateLimit
from outbound_pipeline.unsubscribe.resource import BASE_URL_ENV, UnsubscribeLinksResource
from outbound_pipeline.unsubscribe.server import EndpointThread, ServerOptions, serve
from outbound_pipeline.unsubscribe.suppressions import (
    Suppression,
    SuppressionSource,
    create_suppressions_table,
    is_suppressed,
    list_suppressions,
    lock_the_list,
    metadata,
    suppress,
    suppressed_if_at_most,
    suppressions,
)

__all__ = [
    "BASE_URL_ENV",
    "UnsubscribeLinksResource",
    "link_maker",
    "MAX_TOKEN_LENGTH",
    "OLD_SECRETS_ENV",
    "SECRET_ENV",
    "EndpointThread",
    "InvalidToken",
    "RateLimit",
    "ServerOptions",
    "Suppression",
    "SuppressionSource",
    "UnsubscribeSecretError",
    "create_app",
    "create_suppressions_table",
    "is_suppressed",
    "list_suppressions",
    "lock_the_list",
    "metadata",
    "read_token",
    "secret_from_env",
    "serve",
    "suppress",
    "suppressed_if_at_most",
    "suppressions",
    "unsubscribe_link",
    "unsubscribe_token",
    "verifying_secrets_from_env",
]
