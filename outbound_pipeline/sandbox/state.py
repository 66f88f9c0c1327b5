"""What one sandbox knows and does: its templates and settings, the tokens it issued, the messages
it accepted, its counters and its fault draws. Shared by every request of its app, safe across
threads (the in-process app may be called from several event loops).

The settings `POST /_sandbox/config` changes are listed in CONFIG_KEYS, which the CLI's `--help`
prints and an unknown key's error names.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
import string
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from outbound_pipeline.config import Template
from outbound_pipeline.sandbox.conversations import CONFIG_KEYS as CONVERSATION_KEYS
from outbound_pipeline.sandbox.conversations import QUERY as CONVERSATIONS_QUERY
from outbound_pipeline.sandbox.conversations import ConversationSimulator, settings_from
from outbound_pipeline.sandbox.faults import (
    EXPIRED_TOKEN,
    HTTP_STATUS,
    PAIR_RATE_LIMIT,
    FaultConfig,
    FaultPicker,
)
from outbound_pipeline.sandbox.graphql import DocumentCache, Parsed, api_error
from outbound_pipeline.sandbox.logins import (
    IP_LOGINS_PER_MINUTE,
    USER_LOGINS_PER_MINUTE,
    LoginPolicy,
)
from outbound_pipeline.sandbox.message_rules import checked_message
from outbound_pipeline.whatsapp import preview_text

_ID_ALPHABET = string.ascii_letters + string.digits
# Message ids must be unique, not secret: a urandom-seeded PRNG is ~10x cheaper than `secrets` here.
_IDS = random.Random()

# The settings `POST /_sandbox/config` accepts, each optional: (key, type, default, meaning). The
# defaults are create_app's and the CLI's; `faults` replaces the whole fault settings (null or {}:
# no fault), its keys left out taking their defaults.
CONFIG_KEYS: tuple[tuple[str, str, str, str], ...] = (
    ("latency_ms", "number >= 0", "0", "delay before each GraphQL answer, in milliseconds"),
    ("faults", "object or null", "none", "the faults a mutation may get, with the keys below"),
    ("faults.rate", "number 0..1", "0", "probability that a mutation gets a fault"),
    (
        "faults.kinds",
        "list of strings",
        "[]",
        "the fault kinds to draw from (listed under --fault-kinds), at least one when rate > 0",
    ),
    ("faults.seed", "integer or null", "null", "seed of the draws: one seed, one sequence"),
    ("faults.retry_after_seconds", "number >= 0", "1", "Retry-After of http_429"),
    ("faults.hang_seconds", "number >= 0", "30", "how long timeout_after_receive holds the answer"),
    (
        "faults.min_token_age_seconds",
        "number >= 0",
        "1",
        "expired_token spares tokens younger than this",
    ),
    (
        "faults.calls",
        "list of strings",
        '["mutation"]',
        "the calls that may get a fault: mutation, read (introspection, other queries), login, "
        "token_check (/_authenticated); calls other than the mutation only get the http_* kinds",
    ),
    ("token_ttl_seconds", "integer >= 0", "86400", "lifetime of the tokens issued from then on"),
    (
        "enforce_pair_rate_seconds",
        "number >= 0",
        "0 = off",
        "answer WhatsApp error 131056 to a second message to one recipient within this delay",
    ),
    (
        "login_limit_per_minute",
        "integer >= 0",
        str(USER_LOGINS_PER_MINUTE),
        "logins a minute per username (iAdvize's policy), HTTP 429 beyond; 0 = off",
    ),
    (
        "ip_login_limit_per_minute",
        "integer >= 0",
        str(IP_LOGINS_PER_MINUTE),
        "logins a minute per client IP address, HTTP 429 beyond; 0 = off",
    ),
    *CONVERSATION_KEYS,
)
ACCEPTED_SETTINGS: tuple[str, ...] = tuple(sorted(key for key, *_ in CONFIG_KEYS if "." not in key))


def config_help(width: int = 100) -> str:
    """CONFIG_KEYS as text, one key a line (wrapped to `width`): its type, default and meaning."""
    lines = []
    for key, type_, default, meaning in CONFIG_KEYS:
        indent = "    " if "." in key else "  "
        lines += textwrap.wrap(
            f"{indent}{key} ({type_}; default {default}): {meaning}",
            width=width,
            subsequent_indent=indent + "    ",
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class SandboxState:
    """Everything one sandbox knows; shared by all requests of its app, safe across threads."""

    def __init__(
        self,
        templates: Iterable[Template],
        *,
        latency_ms: float = 0.0,
        faults: FaultConfig | None = None,
        token_ttl_seconds: int = 86400,
        enforce_pair_rate_seconds: float = 0.0,
        login_limit_per_minute: int = USER_LOGINS_PER_MINUTE,
        ip_login_limit_per_minute: int = IP_LOGINS_PER_MINUTE,
    ) -> None:
        self.login_policy = LoginPolicy(login_limit_per_minute, ip_login_limit_per_minute)
        self.templates: dict[tuple[str, str], Template] = {
            (t.name, t.language): t for t in templates
        }
        self.latency_ms = latency_ms
        self.token_ttl_seconds = token_ttl_seconds
        self.enforce_pair_rate_seconds = enforce_pair_rate_seconds
        self.tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._issued: dict[str, float] = {}  # token -> monotonic issue time
        self.messages: list[dict[str, Any]] = []
        self.counters: Counter[str] = Counter()
        self.faults_by_kind: Counter[str] = Counter()
        self._last_to_recipient: dict[str, float] = {}
        self._documents = DocumentCache()
        self._lock = threading.Lock()
        self.faults = faults or FaultConfig()
        self._picker = FaultPicker(self.faults)
        self.conversations = ConversationSimulator()

    # --- configuration -------------------------------------------------------------------------

    def set_faults(self, faults: FaultConfig | None) -> None:
        with self._lock:
            self.faults = faults or FaultConfig()
            self._picker = FaultPicker(self.faults)

    def configure(self, settings: Mapping[str, Any]) -> None:
        """Apply `{latency_ms?, faults?, token_ttl_seconds?, enforce_pair_rate_seconds?}` (see
        CONFIG_KEYS); nothing changes when any of them is refused."""
        unknown = set(settings) - set(ACCEPTED_SETTINGS)
        if unknown:
            raise ValueError(
                f"unknown settings {sorted(unknown)}; accepted: {', '.join(ACCEPTED_SETTINGS)}"
            )
        # Validate everything before changing anything.
        faults = (
            FaultConfig.model_validate(settings["faults"])
            if settings.get("faults") is not None
            else None
        )
        latency = float(settings.get("latency_ms", self.latency_ms))
        ttl = int(settings.get("token_ttl_seconds", self.token_ttl_seconds))
        pair = float(settings.get("enforce_pair_rate_seconds", self.enforce_pair_rate_seconds))
        policy = self.login_policy
        per_user = int(settings.get("login_limit_per_minute", policy.per_user))
        per_ip = int(settings.get("ip_login_limit_per_minute", policy.per_ip))
        if min(latency, ttl, pair, per_user, per_ip) < 0:
            raise ValueError(
                "latency_ms, token_ttl_seconds, enforce_pair_rate_seconds and the login limits "
                "must be >= 0"
            )
        policy.per_user, policy.per_ip = per_user, per_ip
        if "conversations" in settings:
            self.conversations.configure(settings_from(settings["conversations"]))
        if "faults" in settings:
            self.set_faults(faults)
        self.latency_ms, self.token_ttl_seconds, self.enforce_pair_rate_seconds = latency, ttl, pair

    def reset(self) -> None:
        """Forget messages, counters and pair-rate history; tokens stay valid. Faults restart their
        seeded sequence, so a test that resets gets the same draws as a fresh sandbox."""
        with self._lock:
            self.messages.clear()
            self.counters.clear()
            self.faults_by_kind.clear()
            self._last_to_recipient.clear()
            self._picker = FaultPicker(self.faults)
        self.conversations.reset()
        self.login_policy.reset()

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "logins": self.counters["logins"],
                "login_failures": self.counters["login_failures"],
                "graphql_calls": self.counters["graphql_calls"],
                "graphql_reads": self.counters["graphql_reads"],  # queries: introspection, ...
                "unauthenticated": self.counters["unauthenticated"],
                "accepted": self.counters["accepted"],
                "rejected": self.counters["rejected"],
                "pair_rate_limited": self.counters["pair_rate_limited"],
                "faults_total": sum(self.faults_by_kind.values()),
                "faults": dict(self.faults_by_kind),
                "logins_refused": self.login_policy.refused,  # over the login policy: 429
                "login_times": self.login_policy.times(),  # Unix time of each login
            }

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.messages)

    # --- tokens --------------------------------------------------------------------------------

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self.tokens[token] = now + self.token_ttl_seconds
            self._issued[token] = now
            self.counters["logins"] += 1
        return token

    def bearer(self, authorization: str | None) -> str | None:
        """The caller's token when it is one we issued and it has not expired."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        token = authorization[len("Bearer ") :].strip()
        expiry = self.tokens.get(token)
        return token if expiry is not None and expiry > time.monotonic() else None

    def revoke(self, token: str) -> None:
        with self._lock:
            self.tokens.pop(token, None)
            self._issued.pop(token, None)

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()
            self._issued.clear()

    def token_age(self, token: str) -> float:
        return time.monotonic() - self._issued.get(token, float("-inf"))

    # --- GraphQL -------------------------------------------------------------------------------

    def document(self, query: str) -> Parsed:
        """The parsed and validated document, or its errors (cached by query text)."""
        return self._documents.parsed(query)

    def draw_fault(self, token: str) -> str | None:
        """This call's fault, if any. Every call consumes its draw, so a seed gives the same sequence
        whatever happens to each call."""
        fault = self._picker.pick()
        if "mutation" not in self.faults.calls:
            return None
        if fault == EXPIRED_TOKEN and self.token_age(token) < self.faults.min_token_age_seconds:
            # A token the server has just issued does not expire: without this, the retry that
            # follows a re-login could be refused again, which on the real API means bad credentials.
            return None
        if fault is not None:
            with self._lock:
                self.faults_by_kind[fault] += 1
        return fault

    def draw_call_fault(self, call: str) -> str | None:
        """The HTTP fault of a call other than the mutation (`faults.calls` names it), if any."""
        if call not in self.faults.calls:
            return None
        fault = self._picker.pick()
        if fault not in HTTP_STATUS:
            return None
        with self._lock:
            self.faults_by_kind[fault] += 1
        return fault

    def send(self, data: Mapping[str, Any]) -> dict[str, str]:
        """The mutation's resolver: check the input as iAdvize and WhatsApp would, then record it."""
        template, header, body = checked_message(self.templates, data)
        recipient = data["recipientId"]
        text = preview_text(template.header, template.body, header, body)
        message_id = "".join(_IDS.choices(_ID_ALPHABET, k=27))
        with self._lock:
            if self.enforce_pair_rate_seconds > 0:
                self._check_pair_rate(recipient)
            self.messages.append(
                {
                    "message_id": message_id,
                    "sender_id": data["senderId"],
                    "recipient_id": recipient,
                    "template_name": template.name,
                    "language": template.language,
                    "header_variables": header,
                    "body_variables": body,
                    "campaign_id": data["campaignId"],
                    "message_text": text,
                    "received_at": _now_iso(),
                }
            )
            self.counters["accepted"] += 1
        self.conversations.message_accepted(
            message_id, recipient, data["campaignId"], dt.datetime.now(dt.UTC)
        )
        return {"messageText": text, "messageId": message_id}

    def read_queries(self) -> dict[str, Callable[..., Any]]:
        """The resolvers of the Query fields (conversations.py serves `conversations`)."""
        return {
            CONVERSATIONS_QUERY: lambda _info, filters, first, after=None: (
                self.conversations.search(filters, first, after)
            )
        }

    def _check_pair_rate(self, recipient: str) -> None:
        """Refuse a second message to one recipient within enforce_pair_rate_seconds, as WhatsApp
        does (131056); the caller holds the lock."""
        now = time.monotonic()
        last = self._last_to_recipient.get(recipient)
        if last is not None and now - last < self.enforce_pair_rate_seconds:
            self.counters["pair_rate_limited"] += 1
            raise api_error(
                f"(#{PAIR_RATE_LIMIT.code}) {PAIR_RATE_LIMIT.message}",
                "WHATSAPP_ERROR",
                PAIR_RATE_LIMIT.retry_policy,
                PAIR_RATE_LIMIT.code,
            )
        self._last_to_recipient[recipient] = now
