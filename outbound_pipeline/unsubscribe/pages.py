"""The endpoint's pages: fixed bytes, built once. None of them holds the token, the phone or
anything that depends on who asks, so two requests get the same answer byte for byte."""

from __future__ import annotations

from dataclasses import dataclass

# The pages embed and load nothing; the form, without an action, posts back to the URL it came from.
# no-referrer: the token in the URL must not travel to another site, nor sit in a cache.
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-type", "text/html; charset=utf-8"),
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("x-robots-tag", "noindex, nofollow"),
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    ),
)

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5;color:#222}button{font-size:1.1rem;padding:.6rem 1.2rem;cursor:pointer}"
)
# RFC 8058's one-click body: the confirm button sends what a mail client's one-click POST sends.
ONE_CLICK_BODY = "List-Unsubscribe=One-Click"


@dataclass(frozen=True)
class Page:
    status: int
    body: bytes


def _page(status: int, title: str, text: str, form: bool = False) -> Page:
    button = (
        '<form method="post">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
        if form
        else ""
    )
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{title}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{title}</h1><p>{text}</p>{button}</body></html>"
    )
    return Page(status, html.encode())


CONFIRM = _page(
    200,
    "Unsubscribe from our WhatsApp messages",
    "Press the button to stop receiving WhatsApp messages from us, from every campaign. "
    "It takes effect at once.",
    form=True,
)
DONE = _page(
    200,
    "You are unsubscribed",
    "You will receive no more WhatsApp messages from us. You can close this page.",
)
INVALID_LINK = _page(
    400,
    "This link is not valid",
    "This unsubscribe link is incomplete or was changed, so nothing was recorded. Open the link "
    "exactly as it appears in the message you received, or contact us to unsubscribe.",
)
NOT_FOUND = _page(404, "Page not found", "There is nothing at this address.")
WRONG_METHOD = _page(
    405,
    "Use the unsubscribe button",
    "Nothing was recorded. Open the link from your message and press the button on its page.",
)
TIMED_OUT = _page(408, "Request too slow", "Nothing was recorded. Please try again.")
TOO_LARGE = _page(413, "Request too large", "Nothing was recorded. Please open the link again.")
HEAD_TOO_LARGE = _page(
    431, "Request too large", "Nothing was recorded. Please open the link again."
)
TOO_MANY = _page(
    429, "Too many requests", "Nothing was recorded. Please wait a minute and try again."
)
UNAVAILABLE = _page(
    503,
    "Please try again",
    "We could not record your request just now. Please try again in a few minutes.",
)
