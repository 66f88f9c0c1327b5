"""WhatsApp (Meta) error codes that more than one part of the pipeline acts on."""

from __future__ import annotations

# The user stopped marketing messages: the send fails, and the recipient is suppressed like an
# opt-out for every later marketing message (the claim's checks read it back from the ledger).
MARKETING_STOPPED = "131050"
