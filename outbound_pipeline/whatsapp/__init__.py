"""WhatsApp's rules: phone numbers (E.164, masking), template placeholders and parameter rules,
the error codes the pipeline acts on."""

from __future__ import annotations

from outbound_pipeline.whatsapp.codes import MARKETING_STOPPED
from outbound_pipeline.whatsapp.formatting import ValueFormat, format_value, knows_language
from outbound_pipeline.whatsapp.phone_batches import normalise_all
from outbound_pipeline.whatsapp.phones import (
    E164_SHAPE,
    is_valid_e164,
    mask,
    mask_phones_in,
    masked_sample,
    normalise,
    wire_format,
)
from outbound_pipeline.whatsapp.templates import (
    BODY_ONLY_PARAM_MAX,
    BODY_PARAM_MAX,
    HEADER_PARAM_MAX,
    clean_parameter,
    is_blank,
    parameter_violation,
    params_from_payload,
    placeholders,
    preview_text,
    render_text,
    unnumbered_placeholders,
    variables_payload,
    whatsapp_length,
)

__all__ = [
    "E164_SHAPE",
    "MARKETING_STOPPED",
    "BODY_ONLY_PARAM_MAX",
    "BODY_PARAM_MAX",
    "HEADER_PARAM_MAX",
    "ValueFormat",
    "clean_parameter",
    "format_value",
    "is_blank",
    "is_valid_e164",
    "knows_language",
    "mask",
    "mask_phones_in",
    "masked_sample",
    "normalise",
    "normalise_all",
    "parameter_violation",
    "params_from_payload",
    "placeholders",
    "preview_text",
    "render_text",
    "unnumbered_placeholders",
    "variables_payload",
    "whatsapp_length",
    "wire_format",
]
