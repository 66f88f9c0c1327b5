"""Fault injection for the sandbox: which calls fail, and how.

Every fault of the reference table has a kind. Three families:

- refused before acceptance (nothing recorded, safe to retry): `http_429`, `http_500`, `http_502`,
  `expired_token` and the WhatsApp errors `wa_<code>`;
- accepted then the answer is lost (recorded, the client cannot know): `timeout_after_receive`,
  `drop_after_accept`, and `http_504` (the gateway gave up waiting for a server that sent it).
  These must end as `unknown` in the pipeline's ledger, and so does a 502, which a client cannot
  tell from the accepted kind.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HTTP_STATUS: dict[str, int] = {"http_429": 429, "http_500": 500, "http_502": 502, "http_504": 504}
TIMEOUT_AFTER_RECEIVE = "timeout_after_receive"
DROP_AFTER_ACCEPT = "drop_after_accept"
GATEWAY_TIMEOUT = "http_504"
ACCEPT_THEN_FAIL = frozenset({TIMEOUT_AFTER_RECEIVE, DROP_AFTER_ACCEPT, GATEWAY_TIMEOUT})
EXPIRED_TOKEN = "expired_token"


@dataclass(frozen=True)
class WhatsAppError:
    code: int
    message: str
    retry_policy: str  # "RETRY" or "NO_RETRY", as iAdvize's extensions.retryPolicy

    def graphql_error(self, response_key: str = "whatsAppOutboundMessageSend") -> dict[str, Any]:
        """The GraphQL error entry as iAdvize relays a WhatsApp (Meta) error."""
        return {
            "message": f"(#{self.code}) {self.message}",
            "path": [response_key],
            "extensions": {
                "name": "WHATSAPP_ERROR",
                "retryPolicy": self.retry_policy,
                "whatsappCode": self.code,
            },
        }


# How Meta's errors surface through iAdvize is not documented (reference, section 2): this is our
# reading, with retryPolicy RETRY only for the errors that a later identical call may clear.
WHATSAPP_ERRORS: dict[str, WhatsAppError] = {
    "wa_130429": WhatsAppError(130429, "Rate limit hit", "RETRY"),
    "wa_131056": WhatsAppError(131056, "Pair rate limit hit", "RETRY"),
    "wa_131000": WhatsAppError(131000, "Something went wrong", "RETRY"),
    "wa_131026": WhatsAppError(131026, "Message undeliverable", "NO_RETRY"),
    "wa_131049": WhatsAppError(
        131049,
        "This message was not delivered to maintain healthy ecosystem engagement",
        "NO_RETRY",
    ),
    "wa_131048": WhatsAppError(131048, "Spam rate limit hit", "NO_RETRY"),
    "wa_131050": WhatsAppError(131050, "User has stopped marketing messages", "NO_RETRY"),
    "wa_132015": WhatsAppError(132015, "Template is paused", "NO_RETRY"),
    "wa_132016": WhatsAppError(132016, "Template is disabled", "NO_RETRY"),
    "wa_368": WhatsAppError(368, "Temporarily blocked for policies violations", "NO_RETRY"),
}
PAIR_RATE_LIMIT = WHATSAPP_ERRORS["wa_131056"]

FAULT_KINDS: frozenset[str] = frozenset(
    {*HTTP_STATUS, *ACCEPT_THEN_FAIL, EXPIRED_TOKEN, *WHATSAPP_ERRORS}
)


class FaultConfig(BaseModel):
    """Which faults a call may get: with probability `rate`, one of `kinds`, drawn with `seed`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Probability a call gets a fault.")
    kinds: list[str] = Field(default_factory=list)
    seed: int | None = None
    retry_after_seconds: float = Field(default=1.0, ge=0.0, description="Retry-After of http_429.")
    hang_seconds: float = Field(default=30.0, ge=0.0, description="Hang of timeout_after_receive.")
    min_token_age_seconds: float = Field(
        default=1.0, ge=0.0, description="expired_token spares tokens younger than this."
    )
    calls: list[Literal["mutation", "read", "login", "token_check"]] = Field(
        default_factory=lambda: ["mutation"],
        description="The calls that may get a fault; others than the mutation: http_* kinds only.",
    )

    @field_validator("kinds")
    @classmethod
    def _known(cls, kinds: list[str]) -> list[str]:
        unknown = sorted(set(kinds) - FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {sorted(FAULT_KINDS)}")
        return kinds

    @model_validator(mode="after")
    def _kinds_for_rate(self) -> FaultConfig:
        if self.rate > 0 and not self.kinds:
            raise ValueError("a fault rate above 0 needs at least one kind")
        return self


class FaultPicker:
    """Draws the fault of each call; the same seed gives the same sequence of draws."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._random = random.Random(config.seed)
        # The in-process app may be called from several threads (one event loop each).
        self._lock = threading.Lock()

    def pick(self) -> str | None:
        if self.config.rate <= 0:
            return None
        with self._lock:
            if self._random.random() >= self.config.rate:
                return None
            return self._random.choice(self.config.kinds)


def retry_after_header(seconds: float) -> str:
    """Whole seconds as HTTP wants, but a fraction is kept so tests can back off quickly."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
