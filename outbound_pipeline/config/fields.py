"""What every configuration model shares: a strict frozen base, stripped text, the timezone and
phone-region checks, and `FieldErrors` to name the field a cross-field check blames."""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Any

import phonenumbers
from pydantic import BaseModel, BeforeValidator, ConfigDict


class FieldErrors(ValueError):
    """Raised inside model validators to name the field(s) at fault, relative to the model.

    pydantic locates a model validator's error at the model itself (or at the top for the whole
    file); `parse_config` appends these paths so the message still names the field.
    """

    def __init__(self, *items: tuple[str, str]) -> None:
        super().__init__("; ".join(f"{where}: {message}" for where, message in items))
        self.items = items


class StrictModel(BaseModel):
    """Unknown fields are refused (a misspelt field must not be ignored) and loaded values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


Text = Annotated[str, BeforeValidator(_strip)]


def checked_timezone(value: str) -> str:
    # 'localtime' names whatever the host is set to: a schedule must not change with the machine.
    if value in ("localtime", "Factory") or value not in zoneinfo.available_timezones():
        raise ValueError(f"'{value}' is not a known IANA timezone (e.g. Europe/Paris, UTC)")
    return value


def checked_region(value: str) -> str:
    if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"'{value}' is not a phone region; expected an ISO country code such as FR"
        )
    return value.upper()
