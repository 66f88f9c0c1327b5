"""Free text made safe for a notification: phone numbers masked, secrets removed."""

from __future__ import annotations

import re
from collections.abc import Iterable

from outbound_pipeline.whatsapp import mask

# A phone number: 8 to 15 digits, maybe a '+', maybe single spaces, dots or dashes between digits,
# not glued to a word (run IDs and hex stay as they are).
_PHONE = re.compile(r"(?<![\w-])\+?\d(?:[ .\-\u00a0]?\d){7,14}(?![\w-])")
# ISO dates and times are not phone numbers: set aside before masking, put back after.
_ISO_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
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

    text = _ISO_TIME.sub(keep, text)
    text = _PHONE.sub(lambda m: mask(re.sub(r"[ .\-\u00a0]", "", m.group(0))), text)
    return re.sub(r"\x00(\d+)\x00", lambda m: kept[int(m.group(1))], text)
