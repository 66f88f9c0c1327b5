"""The iAdvize API: the Dagster resource (resource.py), the async client of the outbound WhatsApp
mutation (client.py), its login and token cache (auth.py), what it reads of the schema (schema.py)
and the error vocabulary that turns each answer into what the pipeline does (errors.py)."""

from __future__ import annotations

from outbound_pipeline.iadvize.auth import forget_tokens, login_count
from outbound_pipeline.iadvize.client import IAdvizeClient, OutboundMessage, SendResult
from outbound_pipeline.iadvize.errors import (
    LONGEST_RETRY_WAIT_SECONDS,
    Action,
    IAdvizeError,
    Verdict,
    classify_code,
    classify_exception,
    classify_graphql_errors,
    classify_http,
    request_never_left,
)
from outbound_pipeline.iadvize.resource import LIVE_SETTINGS, IAdvizeResource, missing_live_settings
from outbound_pipeline.iadvize.schema import MUTATION_FIELD

__all__ = [
    "Action",
    "IAdvizeClient",
    "IAdvizeError",
    "IAdvizeResource",
    "LIVE_SETTINGS",
    "LONGEST_RETRY_WAIT_SECONDS",
    "MUTATION_FIELD",
    "OutboundMessage",
    "SendResult",
    "Verdict",
    "classify_code",
    "classify_exception",
    "classify_graphql_errors",
    "classify_http",
    "forget_tokens",
    "login_count",
    "missing_live_settings",
    "request_never_left",
]
