"""Text that exercises WhatsApp's parameter rules, for the property tests (hypothesis) of the
rules and of rendering: arbitrary Unicode mixed with spaces, line breaks, controls, invisible and
right-to-left characters, emoji sequences and placeholder look-alikes, short and long."""

from __future__ import annotations

from hypothesis import strategies as st

# Characters that exercise the rules, mixed into arbitrary Unicode text.
SPECIALS = [
    " ",
    " ",
    "    ",
    "     ",
    "\u00a0",
    "\u00a0" * 5,
    "\u202f",
    "\u3000",
    "\n",
    "\r",
    "\t",
    "\v",
    "\f",
    "\x85",
    "\u2028",
    "\u2029",
    "\x00",
    "\x1b",
    "\x7f",
    "\u200b",
    "\u200d",
    "\u200f",
    "\ufeff",
    "\u0301",
    "\u0653",
    "😀",
    "👍🏽",
    "👨‍👩‍👧",
    "🇫🇷",
    "שלום",
    "مرحبا",
    "'",
    '"',
    "\\",
    "\\1",
    "{{1}}",
    "{{2}}",
    "%s",
    "{0}",
    "'; DROP TABLE customers; --",
    "e\u0301",
    "\ud7ff",
    "\U0010ffff",
]
hostile_text = st.lists(
    st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(SPECIALS)), max_size=40
).map("".join)
# Long values too: the limits are 60, 1,024 and 32,768.
long_text = st.builds(
    lambda chunk, n: chunk * n, hostile_text, st.integers(min_value=1, max_value=1200)
)
any_text = st.one_of(hostile_text, long_text)
components = st.sampled_from([("header", False), ("body", False), ("body", True)])
