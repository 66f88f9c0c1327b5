"""One message per phone, and per customer, per campaign and day: the later audience rows of a
phone or customer already eligible are skipped as duplicates."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from outbound_pipeline.outcomes import Reason
from outbound_pipeline.warehouse import audience

# A chunk's rows hold the columns of outbound_audience in the table's order (extraction.ROW_COLUMNS).
_COLUMNS = tuple(audience.c.keys())
_CUSTOMER, _RECIPIENT, _ELIGIBLE, _REASON = (
    _COLUMNS.index(name) for name in ("customer_id", "recipient", "eligible", "reason")
)


class FirstEligible:
    """One message per phone, and per customer, per campaign and day: the first eligible row (in
    query order) keeps it, the later ones are skipped as duplicate_recipient, else
    duplicate_customer.

    A customer ID returned with two different phones is a data problem (which number did the
    customer opt in with?): sending to both could reach someone who never consented.

    Marked as the rows stream past, chunk by chunk in query order, before they are written: no
    sort of the day and no update after it. What it keeps is one entry per eligible phone and
    customer of the day: a phone as the integer of its E.164 digits (injective: E.164 is "+" and
    digits without a leading zero), a customer ID as its text.
    """

    def __init__(self) -> None:
        self._phones: set[int] = set()
        self._customers: set[Any] = set()

    def mark(self, rows: Sequence[list[Any]], reasons: Counter[str]) -> int:
        """Mark the later rows of `rows` (lists of outbound_audience's columns) in place, moving
        their count in `reasons` from "eligible" to the duplicate's reason. How many it marked."""
        marked = 0
        for row in rows:
            if not row[_ELIGIBLE]:
                continue
            recipient, customer = row[_RECIPIENT], row[_CUSTOMER]
            reason = None
            if recipient is not None:
                phone = int(recipient[1:])
                if phone in self._phones:
                    reason = Reason.DUPLICATE_RECIPIENT
                else:
                    self._phones.add(phone)
            if reason is None and customer is not None:
                if customer in self._customers:
                    reason = Reason.DUPLICATE_CUSTOMER
                else:
                    self._customers.add(customer)
            if reason is None:
                continue
            # Its variant stays (the report counts the variants of rows sent, not of the audience).
            row[_ELIGIBLE], row[_REASON] = False, reason.value
            reasons["eligible"] -= 1
            reasons[reason.value] += 1
            marked += 1
        return marked
