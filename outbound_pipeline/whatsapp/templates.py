"""WhatsApp template placeholders, parameter rules and rendering.

Pure functions: the sandbox renders `messageText` with the same code the pipeline uses for its preview,
so a preview is exactly what iAdvize would answer.

How characters are counted: WhatsApp limits a parameter to 60 (header) or 1,024 / 32,768 (body)
"characters" without saying whether it counts graphemes, code points or UTF-16 code units. We count
UTF-16 code units (an emoji outside the Basic Multilingual Plane counts 2, a combining accent counts 1
on its own): that count is never smaller than the other two, so a value within our limit is within
WhatsApp's whichever way it counts.

Which characters break the rules (error 132018): newlines and tabs, more than 4 consecutive spaces. To
stay on the safe side we treat every Unicode line break (CR, LF, VT, FF, NEL, U+2028, U+2029, ...) as
a newline, every Unicode space separator (no-break space, em space, ...) as a space, and refuse the
other control characters (NUL, ESC, DEL, ...), which no client displays.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping, Sequence

# ASCII digits only: `\d` would also read Arabic-Indic or full-width digits as placeholder numbers.
PLACEHOLDER = re.compile(r"\{\{\s*([0-9]+)\s*\}\}")
# Anything between double braces: named or malformed placeholders that we cannot fill.
ANY_BRACES = re.compile(r"\{\{.*?\}\}", re.DOTALL)

HEADER_PARAM_MAX = 60
BODY_PARAM_MAX = 1024
BODY_ONLY_PARAM_MAX = 32768
MAX_CONSECUTIVE_SPACES = 4

# Rule names, used in reasons and check metadata.
EMPTY = "empty"
NEWLINE_OR_TAB = "newline_or_tab"
CONTROL_CHARACTER = "control_character"
TOO_MANY_SPACES = "more_than_4_consecutive_spaces"

_BREAK_CHARS = "\t\n\v\f\r\x1c\x1d\x1e\x85\u2028\u2029"
_BREAKS = re.compile(f"[{_BREAK_CHARS}]")
_BREAK_RUNS = re.compile(f"[{_BREAK_CHARS}]+")
# C0 and C1 controls other than the line breaks above.
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f]")
# Unicode space separators (category Zs): a run of no-break spaces looks like a run of spaces.
_SPACE_CHARS = " \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
_SPACE_RUNS = re.compile(f"[{_SPACE_CHARS}]{{{MAX_CONSECUTIVE_SPACES + 1},}}")
_ANY_RULE = re.compile(f"{_BREAKS.pattern}|{_CONTROLS.pattern}|{_SPACE_RUNS.pattern}")
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Zs", "Cs"})
_ELLIPSIS = "…"
# Joiners and variation selectors that would dangle at the end of a cut value.
_DANGLING = "\u200c\u200d\ufe0e\ufe0f"


def placeholders(text: str) -> list[int]:
    """The distinct placeholder numbers of a text, in ascending order."""
    return sorted({int(n) for n in PLACEHOLDER.findall(text)})


def unnumbered_placeholders(text: str) -> list[str]:
    """Double-brace groups that are not {{n}} placeholders (named ones such as {{first_name}})."""
    return [m for m in ANY_BRACES.findall(text) if not PLACEHOLDER.fullmatch(m)]


def render_text(text: str, values: Sequence[str]) -> str:
    """Substitute {{1}}..{{n}} with values[0]..values[n-1], in one pass.

    A value that itself contains '{{2}}' or backslashes is inserted as is, never substituted again.
    """
    first, rest = _segments(text)
    out = [first]
    for index, literal in rest:
        out.append(values[index])
        out.append(literal)
    return "".join(out)


@functools.lru_cache(maxsize=256)  # a campaign's few templates, rendered for every row
def _segments(text: str) -> tuple[str, tuple[tuple[int, str], ...]]:
    """The text before its first placeholder, then each placeholder's index into the values with
    the text after it: the template split once instead of a regex substitution a row (a fifth of
    the cost: 0.3 against 1.3 us for a body of two)."""
    pieces = PLACEHOLDER.split(text)
    return pieces[0], tuple(zip((int(n) - 1 for n in pieces[1::2]), pieces[2::2], strict=True))


def parameter_limit(component: str, body_only: bool) -> int:
    """The most characters a parameter of this component may hold (60, 1,024 or 32,768)."""
    if component == "header":
        return HEADER_PARAM_MAX
    return BODY_ONLY_PARAM_MAX if body_only else BODY_PARAM_MAX


def whatsapp_length(value: str) -> int:
    """Length in UTF-16 code units (see the module docstring for why)."""
    return len(value.encode("utf-16-le", errors="surrogatepass")) // 2


def _visible(ch: str) -> bool:
    return not ch.isspace() and unicodedata.category(ch) not in _INVISIBLE_CATEGORIES


def is_blank(value: str | None) -> bool:
    """None, or only whitespace, control and format characters (zero-width space, RTL marks...)."""
    if value is None:
        return True
    # Most values start with a letter or digit, which is always visible: no scan.
    return not value[:1].isalnum() and not any(_visible(ch) for ch in value)


def parameter_violation(value: str | None, component: str, body_only: bool) -> str | None:
    """The WhatsApp rule (132018/length) a parameter breaks, or None when it is sendable."""
    if is_blank(value):
        return EMPTY
    assert value is not None  # for the type checker: is_blank(None) is True
    limit = parameter_limit(component, body_only)
    # One search for any of the three rules, and no count of UTF-16 units while a value has at
    # most half the limit in code points (each is one or two units): the common case, cheaply.
    if not _ANY_RULE.search(value) and len(value) * 2 <= limit:
        return None
    if _BREAKS.search(value):
        return NEWLINE_OR_TAB
    if _CONTROLS.search(value):
        return CONTROL_CHARACTER
    if _SPACE_RUNS.search(value):
        return TOO_MANY_SPACES
    if whatsapp_length(value) > limit:
        return f"longer_than_{limit}_characters"
    return None


def _strip_invisible(value: str) -> str:
    start, end = 0, len(value)
    while start < end and not _visible(value[start]):
        start += 1
    while end > start and not _visible(value[end - 1]):
        end -= 1
    return value[start:end]


def clean_parameter(value: str, component: str, body_only: bool) -> str:
    """Make a parameter sendable: line breaks and tabs become a space, other control characters go,
    space runs fold to 4, invisible edges are trimmed, a long value is cut and ends with an ellipsis.

    For any value that is not blank, the result passes `parameter_violation`; a value that already
    passes is returned unchanged. A blank value comes back blank (the caller skips the row).
    """
    limit = parameter_limit(component, body_only)
    if parameter_violation(value, component, body_only) is None:
        return value
    value = _BREAK_RUNS.sub(" ", value)
    value = _CONTROLS.sub("", value)
    value = _SPACE_RUNS.sub(" " * MAX_CONSECUTIVE_SPACES, value)
    value = _strip_invisible(value)
    if whatsapp_length(value) > limit:
        # Keep whole code points while they and the ellipsis fit; the first kept character is visible
        # (edges were trimmed), so the cut value is never blank.
        budget, kept = limit - 1, 0
        for ch in value:
            width = 2 if ord(ch) > 0xFFFF else 1
            if budget < width:
                break
            budget -= width
            kept += 1
        cut = value[:kept]
        while cut and len(cut) > 1 and (cut[-1] in _DANGLING or not _visible(cut[-1])):
            cut = cut[:-1]
        value = cut + _ELLIPSIS
    return value


def preview_text(
    header: str | None, body: str, header_params: Sequence[str], body_params: Sequence[str]
) -> str:
    """The message as the recipient reads it: header line, then body."""
    text = render_text(body, body_params)
    if header:
        return f"{render_text(header, header_params)}\n{text}"
    return text


def variables_payload(params: Sequence[str]) -> list[dict[str, str]]:
    """The GraphQL list of {key, value} pairs for one component."""
    return [{"key": str(i), "value": v} for i, v in enumerate(params, start=1)]


def params_from_payload(items: Sequence[Mapping[str, str]] | None) -> list[str]:
    """Inverse of variables_payload, ordered by key; raises ValueError on gaps or bad keys."""
    if not items:
        return []
    by_key: dict[int, str] = {}
    for item in items:
        key = int(str(item["key"]))
        if key in by_key:
            raise ValueError(f"variable {key} given twice")
        by_key[key] = item["value"]
    if sorted(by_key) != list(range(1, len(by_key) + 1)):
        raise ValueError(f"variable keys must be 1..n, got {sorted(by_key)}")
    return [by_key[k] for k in sorted(by_key)]
