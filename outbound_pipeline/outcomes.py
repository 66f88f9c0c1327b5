"""The ledger's vocabulary: every status a row can have and every reason recorded with it.

One place each, read by every stage: an analyst's `GROUP BY reason` sees exactly these values. A
reason that carries a detail is stored as `code:detail` (`quiet_hours:Europe/Paris`,
`not_sent:interrupted`): `with_detail` writes it, `code_of` reads the code back.
"""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """Where a ledger row stands. The last five are outcomes; pending and sending are in between."""

    PENDING = "pending"  # planned, not claimed yet
    SENDING = "sending"  # claimed by a sending process, its call under way
    SENT = "sent"  # accepted by the API
    FAILED = "failed"  # refused; `retryable` tells whether a later run tries again
    SKIPPED = "skipped"  # not sent on purpose (consent, phone, rendering, duplicates, holdout)
    DEFERRED = "deferred"  # left for a later run (limits, quiet hours, temporary errors)
    UNKNOWN = "unknown"  # the call may have been accepted: never resent automatically


OUTCOMES: tuple[Status, ...] = (
    Status.SENT,
    Status.FAILED,
    Status.SKIPPED,
    Status.DEFERRED,
    Status.UNKNOWN,
)
# Statuses that count as a contact for the limits: the message may have reached the phone.
CONTACTED: tuple[Status, ...] = (Status.SENDING, Status.SENT, Status.UNKNOWN)


class Reason(enum.StrEnum):
    """Why a row has its status (`reason` in every table). Grouped by the stage that records it."""

    # Audience: the row is not eligible.
    CUSTOMER_ID_MISSING = "customer_id_missing"
    CUSTOMER_ID_TOO_LONG = "customer_id_too_long"
    OPTED_OUT = "opted_out"
    NO_CONSENT = "no_consent"
    PHONE_MISSING = "phone_missing"
    PHONE_TOO_LONG = "phone_too_long"
    PHONE_HAS_LETTERS = "phone_has_letters"
    PHONE_UNPARSEABLE = "phone_unparseable"
    PHONE_INVALID = "phone_invalid"
    MARKETING_NOT_DELIVERED_TO_US = "marketing_not_delivered_to_us"
    DUPLICATE_RECIPIENT = "duplicate_recipient"
    DUPLICATE_CUSTOMER = "duplicate_customer"
    # The phone is on the pipeline's suppression list: at extraction, at the claim, and at the
    # dispatch mark right before the call (no call made).
    UNSUBSCRIBED = "unsubscribed"
    HOLDOUT = "holdout"  # kept out on purpose: the campaign's control group (holdout_percent)
    # Messages: a template variable cannot be sent (detail: the variable and the rule).
    EMPTY_VALUE = "empty_value"
    UNFORMATTABLE_VALUE = "unformattable_value"
    PARAMETER_RULE = "parameter_rule"
    # Planning: a phone or customer already handled today under another audience row (a detail of
    # duplicate_recipient / duplicate_customer), and an operator's resend.
    ALREADY_HANDLED_TODAY = "already_handled_today"
    OPERATOR_RESEND_UNKNOWN = "operator_resend_unknown"
    OPERATOR_RESEND_FAILED = "operator_resend_failed"
    # Claim time: decided right before sending, no call made.
    CONSENT_WITHDRAWN_BEFORE_SEND = "consent_withdrawn_before_send"
    USER_STOPPED_MARKETING = "user_stopped_marketing"
    PAIR_RATE = "pair_rate"
    MARKETING_FREQUENCY_CAP = "marketing_frequency_cap"
    MESSAGING_LIMIT = "messaging_limit"
    QUIET_HOURS = "quiet_hours"
    # Sending: what the loop did with a row.
    ACCEPTED = "accepted"
    NOT_SENT = "not_sent"  # detail: why the loop stopped before the call
    STOPPED = "stopped"  # detail: the API error that stopped the campaign or every send
    UNEXPECTED_ERROR = "unexpected_error"  # detail: the error's class
    RETRIES_EXHAUSTED = "retries_exhausted"  # suffix of a retryable reason
    INTERRUPTED_OUTCOME_UNKNOWN = "interrupted_outcome_unknown"
    STATE_STORE_UNAVAILABLE = (
        "state_store_unavailable"  # the run stopped: its ledger was unreachable
    )
    # The API's answer (iadvize.errors), WhatsApp's code in `error_code`.
    THROUGHPUT_LIMIT = "throughput_limit"
    PAIR_RATE_LIMIT = "pair_rate_limit"
    TEMPORARY_ERROR = "temporary_error"
    MAINTENANCE = "maintenance"
    UNDELIVERABLE = "undeliverable"
    MARKETING_CAP = "marketing_cap"
    INVALID_PAYLOAD_OR_TEMPLATE = "invalid_payload_or_template"
    TEMPLATE_PAUSED = "template_paused"
    TEMPLATE_DISABLED = "template_disabled"
    SPAM_RATE_LIMIT = "spam_rate_limit"
    ACCOUNT_BLOCKED_OR_LOCKED = "account_blocked_or_locked"
    TOKEN_REFUSED = "token_refused"
    TOKEN_REFUSED_AFTER_RELOGIN = "token_refused_after_relogin"
    WAITED_FOR_LOGIN = (
        "waited_for_login"  # a re-login waited for its slot: re-checked, called again
    )
    PERMISSION_DENIED = "permission_denied"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    BAD_REQUEST = "bad_request"
    CONNECTION_FAILED = "connection_failed"
    OUTCOME_UNKNOWN = "outcome_unknown"
    UNREADABLE_RESPONSE = "unreadable_response"
    EMPTY_RESPONSE = "empty_response"
    RETRYABLE_ERROR = "retryable_error"  # detail: the error's name
    REJECTED = "rejected"  # detail: the error's name
    IADVIZE_UNAVAILABLE = "iadvize_unavailable"
    IADVIZE_UNUSABLE = "iadvize_unusable"


def with_detail(reason: Reason | str, detail: object) -> str:
    """The stored form of a reason with a detail: `code:detail`."""
    return f"{reason}:{detail}"


def code_of(stored: str | None) -> str | None:
    """The reason code of a stored reason (`quiet_hours:Europe/Paris` -> `quiet_hours`)."""
    return None if stored is None else stored.split(":", 1)[0]
