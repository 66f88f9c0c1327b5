"""Reading the configuration file: YAML, then the models, every mistake reported as one ConfigError.

Loaded once when the definitions load; every mistake fails loading with a message that names the file,
the campaign or template, the field and what is expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from outbound_pipeline.config.fields import FieldErrors
from outbound_pipeline.config.outbound_config import OutboundConfig

BUNDLED_CONFIG = Path(__file__).parent.parent / "demo" / "campaigns.yaml"

# Union and wrapper members pydantic may add to an error's location.
_TYPE_STEPS = frozenset(
    {
        "str",
        "int",
        "float",
        "bool",
        "none",
        "list",
        "dict",
        "VariableSource",
        "Template",
        "Campaign",
    }
)


class ConfigError(ValueError):
    """The configuration file is wrong; the message says where and what is expected."""


def _entry_label(entry: Any) -> str | None:
    """How a list entry is named in messages: a campaign by its key, a template by name/language."""
    if not isinstance(entry, dict):
        return None
    key, name = entry.get("key"), entry.get("name")
    if isinstance(key, str) and key:
        return key
    if isinstance(name, str) and name:
        # A template by name/language; a variant (no language of its own) by its name.
        return f"{name}/{entry['language']}" if entry.get("language") else name
    return None


def _is_type_step(item: Any, node: Any) -> bool:
    # pydantic names union members and wrapper steps in loc: 'function-after[...]', 'str'...
    is_key = isinstance(node, dict) and item in node
    return (
        isinstance(item, str)
        and not is_key
        and ("[" in item or item.startswith("function-") or item in _TYPE_STEPS)
    )


def _describe_location(loc: tuple[Any, ...], raw: Any) -> str:
    """('campaigns', 0, 'schedule', 'cron') -> 'campaigns[order_ready].schedule.cron'."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int) and isinstance(node, list):
            entry = node[item] if 0 <= item < len(node) else None
            text = f"[{_entry_label(entry) or item}]"
            if parts:
                parts[-1] += text
            else:
                parts.append(text)
            node = entry
        elif not _is_type_step(item, node):
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


def _join(base: str, relative: str) -> str:
    if base == "(top level)":
        return relative
    return f"{base}{relative}" if relative.startswith("[") else f"{base}.{relative}"


def _message(error: ErrorDetails) -> str:
    """pydantic's message for one error, reworded for someone editing the YAML file."""
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return "is required"
    if error["type"] == "extra_forbidden":
        return "is not a known field (check its spelling)"
    if "input" in error and error["type"] != "value_error":
        value = error["input"]
        message = f"{message} (got {value!r})"
        if error["type"] == "string_type" and isinstance(value, int) and abs(value) >= 10**6:
            # YAML reads an unquoted +33644646081 as a number.
            message += "; quote it in the YAML file"
    return message


def _error_lines(error: ErrorDetails, raw: Any) -> list[str]:
    """The lines of the ConfigError for one pydantic error: where, then what."""
    where = _describe_location(tuple(error["loc"]), raw)
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldErrors):
        return [f"  {_join(where, path)}: {message}" for path, message in cause.items]
    return [f"  {where}: {_message(error)}"]


def parse_config(raw: Any, source: str = "<config>") -> OutboundConfig:
    """Validate a parsed YAML document; raise ConfigError naming file, entry and field."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with 'templates:' and 'campaigns:'")
    try:
        return OutboundConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [line for error in exc.errors() for line in _error_lines(error, raw)]
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines)) from None


def load_config(path: str | Path | None = None) -> OutboundConfig:
    """Read and validate the YAML file (default: the bundled demo)."""
    path = Path(path) if path else BUNDLED_CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw, str(path))
