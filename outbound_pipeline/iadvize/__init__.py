"""The iAdvize API: the Dagster resource (resource.py), the async client of the outbound WhatsApp
mutation (client.py), its logins (auth.py: the token cache, login slots, renewal, bounds), what it reads of the schema (schema.py)
and the error vocabulary that turns each answer into what the pipeline does (errors.py); after the
send, the WhatsApp conversations: their configurable query (conversation_query.py), read
(conversations.py, graphql_reads.py), checked against the live schema (conversation_schema.py),
matched to sent messages (attribution.py). Their table is the warehouse's outbound_conversations,
written by outbound_pipeline.conversations."""

from __future__ import annotations

from outbound_pipeline.iadvize.attribution import (
    ConversationMatch,
    SentMessage,
    conversation_counts,
    match_conversations,
    visitor_e164,
)
from outbound_pipeline.iadvize.auth import (
    LOGIN_WAIT_SECONDS,
    PROCESS_LOGINS_PER_MINUTE,
    LoginSlots,
    LoginUnavailable,
    MemoryLoginSlots,
    forget_tokens,
    login_count,
    renew_margin,
    user_key,
)
from outbound_pipeline.iadvize.client import IAdvizeClient, OutboundMessage, SendResult
from outbound_pipeline.iadvize.conversation_query import ConversationRecord
from outbound_pipeline.iadvize.conversation_schema import check_conversation_schema
from outbound_pipeline.iadvize.conversations import fetch_conversations
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
    "ConversationMatch",
    "ConversationRecord",
    "IAdvizeClient",
    "IAdvizeError",
    "IAdvizeResource",
    "LIVE_SETTINGS",
    "LOGIN_WAIT_SECONDS",
    "LoginSlots",
    "LoginUnavailable",
    "MemoryLoginSlots",
    "PROCESS_LOGINS_PER_MINUTE",
    "LONGEST_RETRY_WAIT_SECONDS",
    "MUTATION_FIELD",
    "OutboundMessage",
    "SendResult",
    "SentMessage",
    "Verdict",
    "check_conversation_schema",
    "classify_code",
    "classify_exception",
    "classify_graphql_errors",
    "classify_http",
    "fetch_conversations",
    "forget_tokens",
    "login_count",
    "match_conversations",
    "missing_live_settings",
    "renew_margin",
    "user_key",
    "request_never_left",
    "conversation_counts",
    "visitor_e164",
]
