"""iadvize."""

from __future__ import annotations

from outbound_pipeline.iadvize.client import (
    LIVE_SETTINGS,
    MUTATION_FIELD,
    IAdvizeClient,
    IAdvizeError,
    IAdvizeResource,
    OutboundMessage,
    SendResult,
    forget_tokens,
    login_count,
    missing_live_settings,
)
from outbound_pipeline.iadvize.errors import (
    LONGEST_RETRY_WAIT_SECONDS,
    Action,
    Verdict,
    classify_code,
    classify_exception,
    classify_graphql_errors,
    classify_http,
    request_never_left,
)

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
