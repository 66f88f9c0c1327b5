"""Unsubscribe: signed per-recipient links and the pipeline's own suppression list.

links.py makes and reads the links (itsdangerous, a secret from the environment); suppressions.py
is the list (`outbound_suppressions`, on a MetaData of its own for the state store) and its plain
functions; ratelimit.py bounds each client's rate.
"""

from __future__ import annotations

from outbound_pipeline.unsubscribe.links import (
    MAX_TOKEN_LENGTH,
    OLD_SECRETS_ENV,
    SECRET_ENV,
    InvalidToken,
    UnsubscribeSecretError,
    read_token,
    secret_from_env,
    unsubscribe_link,
    unsubscribe_token,
    verifying_secrets_from_env,
)
from outbound_pipeline.unsubscribe.ratelimit import RateLimit
from outbound_pipeline.unsubscribe.suppressions import (
    Suppression,
    SuppressionSource,
    create_suppressions_table,
    is_suppressed,
    list_suppressions,
    metadata,
    suppress,
    suppressions,
)

__all__ = [
    "MAX_TOKEN_LENGTH",
    "OLD_SECRETS_ENV",
    "SECRET_ENV",
    "InvalidToken",
    "RateLimit",
    "Suppression",
    "SuppressionSource",
    "UnsubscribeSecretError",
    "create_suppressions_table",
    "is_suppressed",
    "list_suppressions",
    "metadata",
    "read_token",
    "secret_from_env",
    "suppress",
    "suppressions",
    "unsubscribe_link",
    "unsubscribe_token",
    "verifying_secrets_from_env",
]
