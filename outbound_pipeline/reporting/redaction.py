"""Free text made safe for a notification: phone numbers masked, secrets removed.

Phone numbers are found as everywhere else in the pipeline (`whatsapp.mask_phones_in`); what an
alert's reader needs and that only looks like a number is set aside first and put back after.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from outbound_pipeline.whatsapp import mask_phones_in

# Not phone numbers: ISO dates and times, and identifiers (run IDs, hashes, keys), whose digits are
# glued to a letter or an underscore.
_ISO_TIME = r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
_IDENTIFIER = r"(?<![\w-])(?=[\w-]*\d)[\w-]*[^\W\d][\w-]*"
_NOT_A_PHONE = re.compile(f"{_ISO_TIME}|{_IDENTIFIER}")
_BEARER = re.compile(r"(?i)\b(bearer|token|password|access_token)\b([\"'=: ]+)[^\s\"',;&]+")
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/\s:@]+:[^/\s@]+@")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """The text with phone-like numbers masked and secrets removed."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    text = _URL_CREDENTIALS.sub(r"\1[redacted]@", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)

    kept: list[str] = []

    def keep(match: re.Match[str]) -> str:
        kept.append(match.group(0))
        return f"\x00{len(kept) - 1}\x00"

    text = mask_phones_in(_NOT_A_PHONE.sub(keep, text))
    return re.sub(r"\x00(\d+)\x00", lambda m: kept[int(m.group(1))], text)
