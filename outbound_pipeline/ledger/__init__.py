"""The send ledger (`outbound_ledger`) and the state store it lives in: reconcile, claim, record,
publish.

The state store decides who sends: a transactional database (SQLite or PostgreSQL,
`StateStoreResource`) apart from the brand's warehouse, whose consent table and analyst tables the
ledger reads and writes through the warehouse's engine, never in the same SQL statement.

Protocol, per partition:
1. `read_snapshot` reads the partition's audience and messages from the warehouse; then, in one
   state-store transaction, `reconcile` copies them into `outbound_plan` and turns them into ledger
   rows: one per audience row.
   Rows already `sent`, `unknown` or permanently `failed` are final and never touched again (unless
   an operator asks for a resend, which is recorded).
2. `claim_batch` moves a batch of claimable rows to `sending` under this process's claim token, in
   one committed transaction, after the last-moment checks (halts, consent, suppressions, pair
   rate, marketing cap, messaging limit). Only rows it claimed may be sent. `ClaimCursor` walks the
   day's rows from one claim to the next.
3. `dispatch` marks the rows about to be called, in one commit per group of calls, and refuses
   those whose recipient is on the suppression list; no call leaves before its mark is committed.
   `record_results` writes each outcome, guarded by the claim token.
4. `publish_partition` copies the partition's ledger to the warehouse's `outbound_deliveries`.
A process that dies leaves `sending` rows behind; `expire_dead_claims` turns those marked dispatched
into `unknown` and gives the others back to the queue (`pending`).

Modules:
- store: the state store resource (`StateStoreResource`), which URLs can hold the state, its
  versioned schema (`state_schema`; migrations in outbound_pipeline/migrations/state/);
- upgrade: both stores' schemas to head (`upgrade_stores`, `outbound-pipeline db upgrade`), the
  previous release's ledger history carried into a state store of its own;
- tables: the state store's tables (the ledger, the plan, send runs, limits, pace, halts,
  login slots);
- snapshot: the day's audience and messages, read from the warehouse (`read_snapshot`), copied
  into `outbound_plan`;
- publish: the ledger's published copy in the warehouse (`publish_partition`);
- plan: a campaign's day (`CampaignPlan`, `plan_for`), which rows may be claimed, `Decision`;
- reconcile: audience and messages -> ledger rows (`reconcile`), a day with nothing left to send;
- senders: claim tokens, the senders' registrations and heartbeats, dead senders' claims;
- halts: the stops of a campaign or of every send;
- logins: the iAdvize user's login slots, its login budget shared by every process;
- checks: the claim's checks of each row (consent, marketing stop, pair rate, frequency cap);
- limits: the messaging limit per scope (hourly counts, the scope's lock, the exact count);
- claim: `claim_batch` and `ClaimCursor`;
- dispatch: the dispatch marks (and the suppression list's refusal) before calls leave;
- record: outcomes of claimed rows, claims released unsent, status counts;
- pace: the send slots that hold a sender to its rate across runs;
- quiet_hours: the campaign's allowed local hours, a claim-time check;
- due: days a later run must finish (deferred rows now due, days a dead run abandoned);
- dry_runs: every decision of a real run, rolled back, written to `outbound_dry_runs`.

Statuses and reasons: `outbound_pipeline.outcomes`.
"""

from __future__ import annotations

from outbound_pipeline.ledger.checks import extra_checks_for, row_checks
from outbound_pipeline.ledger.claim import ClaimCursor, Claimed, ClaimResult, claim_batch
from outbound_pipeline.ledger.dispatch import Dispatch, dispatch
from outbound_pipeline.ledger.dry_runs import WOULD_SEND, dry_run
from outbound_pipeline.ledger.due import RETRY_LOOKBACK_DAYS, abandoned_days, due_deferred
from outbound_pipeline.ledger.halts import active_halt, clear_halt, set_halt
from outbound_pipeline.ledger.logins import (
    LOGIN_WINDOW_SECONDS,
    StoreLoginSlots,
    logins_taken,
    take_login_slot,
)
from outbound_pipeline.ledger.pace import PACE_TRUSTED_AHEAD_SECONDS, reserve_send_slots
from outbound_pipeline.ledger.plan import (
    SKIP_PREFIX,
    CampaignPlan,
    Decision,
    LedgerHistoryMissing,
    plan_for,
)
from outbound_pipeline.ledger.publish import Publication, publish_partition
from outbound_pipeline.ledger.quiet_hours import (
    is_allowed,
    next_allowed,
    quiet_hours_check,
    recipient_zones,
)
from outbound_pipeline.ledger.reconcile import reconcile, settled_rows
from outbound_pipeline.ledger.record import Outcome, record_results, release_claims, status_counts
from outbound_pipeline.ledger.senders import (
    DEAD_SENDER_SECONDS,
    ExpiredClaims,
    expire_dead_claims,
    heartbeat,
    new_claim_token,
    register_sender,
)
from outbound_pipeline.ledger.snapshot import DaySnapshot, SnapshotMismatch, read_snapshot
from outbound_pipeline.ledger.store import (
    STATE_DIALECTS,
    StateStoreError,
    StateStoreResource,
    create_state_tables,
    state_dialect_problem,
    state_schema,
)
from outbound_pipeline.ledger.suppression_list import publish_suppressions, suppressed_phones
from outbound_pipeline.ledger.tables import (
    halts,
    login_slots,
    metadata,
    plan_rows,
    quota_scopes,
    quota_usage,
    send_ledger,
    send_runs,
    sender_pace,
)
from outbound_pipeline.ledger.upgrade import (
    StoreRevision,
    StoresUpgrade,
    carry_over_history,
    store_revisions,
    upgrade_stores,
)

__all__ = [
    "publish_suppressions",
    "suppressed_phones",
    "StoreRevision",
    "StoresUpgrade",
    "carry_over_history",
    "store_revisions",
    "upgrade_stores",
    "DEAD_SENDER_SECONDS",
    "LOGIN_WINDOW_SECONDS",
    "PACE_TRUSTED_AHEAD_SECONDS",
    "RETRY_LOOKBACK_DAYS",
    "SKIP_PREFIX",
    "STATE_DIALECTS",
    "WOULD_SEND",
    "CampaignPlan",
    "ClaimCursor",
    "ClaimResult",
    "Claimed",
    "Decision",
    "DaySnapshot",
    "Dispatch",
    "ExpiredClaims",
    "LedgerHistoryMissing",
    "Outcome",
    "Publication",
    "SnapshotMismatch",
    "StateStoreError",
    "StateStoreResource",
    "StoreLoginSlots",
    "abandoned_days",
    "active_halt",
    "claim_batch",
    "clear_halt",
    "create_state_tables",
    "state_schema",
    "dispatch",
    "dry_run",
    "due_deferred",
    "expire_dead_claims",
    "extra_checks_for",
    "halts",
    "heartbeat",
    "is_allowed",
    "login_slots",
    "logins_taken",
    "metadata",
    "new_claim_token",
    "next_allowed",
    "plan_for",
    "plan_rows",
    "publish_partition",
    "quota_scopes",
    "quota_usage",
    "quiet_hours_check",
    "recipient_zones",
    "read_snapshot",
    "reconcile",
    "record_results",
    "register_sender",
    "release_claims",
    "reserve_send_slots",
    "row_checks",
    "send_ledger",
    "send_runs",
    "sender_pace",
    "set_halt",
    "settled_rows",
    "state_dialect_problem",
    "status_counts",
    "take_login_slot",
]
