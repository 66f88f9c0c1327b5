"""Formatting a template parameter for the template's language: a date, a number or an amount.

With babel, so "2026-12-08" reads "8 décembre 2026" in a French template and "December 8, 2026" in
an American one. The configuration checks its literals with it and the messages stage renders every
value with it: both must format alike.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any, Protocol

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal


class ValueFormat(Protocol):
    """What to format a value as: a campaign variable's source (`VariableSource` in config)."""

    @property
    def format(self) -> str | None: ...  # "date", "number", "currency" or None (as is)

    @property
    def currency(self) -> str | None: ...  # ISO 4217 code, for "currency"


def knows_language(language: str) -> bool:
    """True when babel has a locale for the template's language (it formats dates and numbers)."""
    try:
        Locale.parse(language)
    except (UnknownLocaleError, ValueError):
        return False
    return True


def format_value(value: Any, source: ValueFormat, language: str) -> str:
    """The text of one parameter: the value as is, or a date/number formatted for the language.

    Raises ValueError (or ArithmeticError/TypeError) when the value is not a date or a finite number.
    """
    if source.format == "date":
        if isinstance(value, dt.date):
            date = value  # a datetime is a date too; format_date keeps the day
        else:
            # An ISO date or timestamp as the warehouse returns it; '2026-12-08 garbage' is refused.
            date = dt.datetime.fromisoformat(str(value).strip()).date()
        return format_date(date, format="long", locale=language)
    if source.format in ("number", "currency"):
        if isinstance(value, bool):
            raise TypeError("a boolean is not a number")
        number = decimal.Decimal(str(value).strip())
        if not number.is_finite():
            # Decimal reads 'NaN' and 'Infinity': no message should say "NaN €".
            raise ValueError(f"{value!r} is not a finite number")
        if source.format == "currency":
            return format_currency(number, source.currency, locale=language)
        return format_decimal(number, locale=language)
    return str(value)
