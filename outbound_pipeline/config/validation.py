"""The checks across entries of the configuration file: templates and campaign keys declared once,
each campaign against its template (placeholders mapped, literals sendable), shared messaging limits.

Each check returns (field path, message) pairs; `OutboundConfig` raises them all at once, so one
loading names every mistake of the file.
"""

from __future__ import annotations

from collections.abc import Sequence

from outbound_pipeline.config.models import Arm, Campaign, Template, VariableSource
from outbound_pipeline.whatsapp import format_value, knows_language, parameter_violation

Problem = tuple[str, str]  # (field path, what is wrong)


def find_template(templates: Sequence[Template], campaign: Campaign | Arm) -> Template:
    """The template a campaign (or one of its arms) sends, by name and language; KeyError when
    none is declared."""
    for template in templates:
        if (template.name, template.language) == (campaign.template, campaign.language):
            return template
    raise KeyError((campaign.template, campaign.language))


def cross_reference_problems(
    templates: Sequence[Template], campaigns: Sequence[Campaign]
) -> list[Problem]:
    """Every problem between the entries of one file, in the order a reader meets them."""
    problems = _repeated_templates(templates)
    problems.extend(_repeated_campaign_keys(campaigns))
    for campaign in campaigns:
        problems.extend(check_campaign_template(campaign, templates))
    problems.extend(check_shared_limits(campaigns))
    return problems


def _repeated_templates(templates: Sequence[Template]) -> list[Problem]:
    problems: list[Problem] = []
    seen_templates: set[tuple[str, str]] = set()
    for template in templates:
        ident = (template.name, template.language)
        if ident in seen_templates:
            problems.append(
                (f"templates[{template.name}/{template.language}]", "is declared twice")
            )
        seen_templates.add(ident)
    return problems


def _repeated_campaign_keys(campaigns: Sequence[Campaign]) -> list[Problem]:
    keys = [c.key for c in campaigns]
    return [
        (f"campaigns[{key}].key", "campaign keys must be unique; this one is repeated")
        for key in sorted({k for k in keys if keys.count(k) > 1})
    ]


def check_shared_limits(campaigns: Sequence[Campaign]) -> list[Problem]:
    """Campaigns counted under one messaging limit must agree on its tier.

    The tier belongs to the sender or portfolio, not to a campaign. With two tiers the pipeline
    would hold each campaign to its own, and an unlimited one would claim without the scope's lock:
    a limited campaign sharing the scope could then overshoot the real limit.
    """
    first_of_scope: dict[str, Campaign] = {}
    problems: list[Problem] = []
    for campaign in campaigns:
        first = first_of_scope.setdefault(campaign.limit_scope, campaign)
        if campaign.messaging_limit.tier != first.messaging_limit.tier:
            shared = (
                f"portfolio '{campaign.messaging_limit.portfolio}'"
                if campaign.messaging_limit.scope == "portfolio"
                else "the same sender (scope: sender)"
            )
            problems.append(
                (
                    f"campaigns[{campaign.key}].messaging_limit.tier",
                    f"'{campaign.messaging_limit.tier}' differs from campaigns[{first.key}]'s "
                    f"'{first.messaging_limit.tier}', though both count under {shared}; campaigns that "
                    "share a messaging limit must declare the same tier (the one WhatsApp Manager shows)",
                )
            )
    return problems


def _braces(numbers: list[int]) -> str:
    return ", ".join(f"{{{{{n}}}}}" for n in numbers)


def check_campaign_template(campaign: Campaign, templates: Sequence[Template]) -> list[Problem]:
    """What is wrong between a campaign and its template (and each variant's), as (field path,
    message) pairs."""
    try:
        template = find_template(templates, campaign)
    except KeyError:
        return [_missing_template(campaign, templates)]
    if not campaign.variants:
        return _check_arm(campaign.arms()[0], template, f"campaigns[{campaign.key}]")
    problems = variant_problems(campaign)
    for index, arm in enumerate(campaign.arms()):
        where = f"campaigns[{campaign.key}].variants[{arm.variant}]"
        try:
            arm_template = find_template(templates, arm)
        except KeyError:
            known = ", ".join(f"{t.name}/{t.language}" for t in templates) or "none"
            problems.append(
                (
                    f"{where}.template",
                    f"no template '{arm.template}' in language '{arm.language}' under "
                    f"templates: (known: {known})",
                )
            )
            continue
        if arm_template.category != template.category:
            problems.append(
                (
                    f"{where}.template",
                    f"'{arm_template.name}' is {arm_template.category}, the campaign's template "
                    f"'{template.name}' is {template.category}: variants of one campaign share "
                    "its category (its consent and marketing rules); make it a campaign of its own",
                )
            )
        # A variant without variables of its own uses the campaign's: blame those fields then.
        own = campaign.variants[index].variables is not None
        if own:
            problems.extend(_check_arm(arm, arm_template, where))
        else:
            problems.extend(
                (path, f"(variant {arm.variant}) {message}")
                for path, message in _check_arm(arm, arm_template, f"campaigns[{campaign.key}]")
            )
    return problems


def variant_problems(campaign: Campaign) -> list[Problem]:
    """Variant names given once each."""
    names = [v.name for v in campaign.variants]
    return [
        (
            f"campaigns[{campaign.key}].variants[{name}].name",
            "variant names must be unique within a campaign; this one is repeated",
        )
        for name in sorted({n for n in names if names.count(n) > 1})
    ]


def _check_arm(arm: Arm, template: Template, where: str) -> list[Problem]:
    """The placeholders of one template against the variables that fill them."""
    problems: list[Problem] = []
    body_only = template.header is None
    for component, count, mapping in (
        ("header", template.header_count, arm.variables.header),
        ("body", template.body_count, arm.variables.body),
    ):
        mismatch = _placeholder_mismatch(template, component, count, set(mapping))
        if mismatch:
            problems.append((f"{where}.variables.{component}", mismatch))
        for number, source in sorted(mapping.items()):
            problem = _check_source(source, component, body_only, template.language)
            if problem:
                problems.append((f"{where}.variables.{component}.{number}", problem))
    return problems


def _missing_template(campaign: Campaign, templates: Sequence[Template]) -> Problem:
    where = f"campaigns[{campaign.key}]"
    known = ", ".join(f"{t.name}/{t.language}" for t in templates) or "none"
    languages = [t.language for t in templates if t.name == campaign.template]
    if languages:
        # The name exists: the language is what is wrong.
        return (
            f"{where}.language",
            f"template '{campaign.template}' has no language '{campaign.language}' "
            f"under templates: (it has: {', '.join(languages)})",
        )
    return (
        f"{where}.template",
        f"no template '{campaign.template}' in language '{campaign.language}' under "
        f"templates: (known: {known})",
    )


def _placeholder_mismatch(
    template: Template, component: str, count: int, given: set[int]
) -> str | None:
    """The placeholders of one component the campaign leaves unmapped or maps in vain."""
    expected = set(range(1, count + 1))
    if given == expected:
        return None
    parts = []
    if expected - given:
        parts.append(f"missing {_braces(sorted(expected - given))}")
    if given - expected:
        parts.append(f"not in the template: {_braces(sorted(given - expected))}")
    return (
        f"template {template.name}/{template.language} has {count} {component} "
        f"placeholder(s); {'; '.join(parts)}"
    )


def _check_source(
    source: VariableSource, component: str, body_only: bool, language: str
) -> str | None:
    """A literal must render into a sendable parameter, and a format needs a locale babel knows."""
    if source.unsubscribe is not None and component == "header":
        return (
            "an unsubscribe link or token is longer than a header parameter's 60 characters: "
            "put it in the body, or in a URL button"
        )
    if source.format is not None and not knows_language(language):
        return f"format '{source.format}' needs a language babel knows; '{language}' is not one"
    if source.literal is None:
        return None
    try:
        value = format_value(source.literal, source, language)
    except (ValueError, ArithmeticError, TypeError):
        return f"literal {source.literal!r} is not a {source.format}"
    rule = parameter_violation(value, component, body_only)
    if rule is not None:
        return f"literal {value!r} breaks WhatsApp's parameter rules: {rule}"
    return None
