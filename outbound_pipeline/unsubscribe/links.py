"""Signed unsubscribe links: the token carries the recipient's E.164 number, signed with HMAC-SHA256
(itsdangerous) under a secret from the environment, and never expires."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence

import itsdangerous

from outbound_pipeline.whatsapp import E164_SHAPE, is_valid_e164, mask

SECRET_ENV = "OUTBOUND_UNSUBSCRIBE_SECRET"
# Secrets retired by a rotation, still accepted when reading a link: an old link must keep working.
OLD_SECRETS_ENV = "OUTBOUND_UNSUBSCRIBE_OLD_SECRETS"
MIN_SECRET_LENGTH = 32
# A token is about 63 characters; anything much longer is refused before any signature work.
MAX_TOKEN_LENGTH = 200
LINK_PATH = "/u/"
# A salt of its own: a signature made for another purpose with the same secret is not a token here.
_SALT = "outbound_pipeline.unsubscribe.v1"
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+")


class UnsubscribeSecretError(ValueError):
    """The signing secret is missing or too short (the message names the variable, never the value)."""


class InvalidToken(ValueError):
    """A token that is not one this pipeline signed: tampered, truncated, oversized or malformed."""


def _serializer(secrets: Sequence[str]) -> itsdangerous.URLSafeSerializer:
    # itsdangerous signs with the last secret and verifies against each, in constant time.
    return itsdangerous.URLSafeSerializer(
        list(secrets), salt=_SALT, signer_kwargs={"digest_method": hashlib.sha256}
    )


def check_secret(secret: str | None, name: str = SECRET_ENV) -> str:
    """The secret itself when it is long enough to sign with; otherwise a clear error naming `name`."""
    if not secret or not secret.strip():
        raise UnsubscribeSecretError(
            f"{name} is not set: unsubscribe links need a signing secret of at least "
            f"{MIN_SECRET_LENGTH} characters (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )
    if len(secret) < MIN_SECRET_LENGTH:
        raise UnsubscribeSecretError(
            f"{name} is too short ({len(secret)} characters): use at least {MIN_SECRET_LENGTH}"
        )
    return secret


def secret_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The current signing secret, from OUTBOUND_UNSUBSCRIBE_SECRET."""
    env = os.environ if environ is None else environ
    return check_secret(env.get(SECRET_ENV))


def verifying_secrets_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Every secret a link may have been signed with: the retired ones (whitespace-separated in
    OUTBOUND_UNSUBSCRIBE_OLD_SECRETS), then the current one."""
    env = os.environ if environ is None else environ
    old = tuple(check_secret(s, OLD_SECRETS_ENV) for s in (env.get(OLD_SECRETS_ENV) or "").split())
    return (*old, secret_from_env(env))


def unsubscribe_token(phone_e164: str, secret: str) -> str:
    """The URL-safe token for one recipient (about 63 characters, no whitespace): the value of a
    WhatsApp URL button's variable when the template holds the rest of the link."""
    check_secret(secret)
    if not is_valid_e164(phone_e164):
        raise ValueError(f"not a valid E.164 number: {mask(phone_e164)}")
    return _serializer([secret]).dumps(phone_e164)


def unsubscribe_link(phone_e164: str, base_url: str, secret: str) -> str:
    """The recipient's unsubscribe link, `<base_url>/u/<token>`: the value of a template variable."""
    if not base_url.startswith(("https://", "http://")):
        raise ValueError("the unsubscribe base URL must start with https:// (or http:// locally)")
    return base_url.rstrip("/") + LINK_PATH + unsubscribe_token(phone_e164, secret)


def read_token(token: str, secret: str | Sequence[str]) -> str:
    """The phone number an authentic token was made for, whatever its age; InvalidToken otherwise."""
    secrets = [secret] if isinstance(secret, str) else list(secret)
    for each in secrets:
        check_secret(each)
    # Shape first: that depends on the token alone, so refusing early tells nothing of the secret.
    if len(token) > MAX_TOKEN_LENGTH or not _TOKEN_SHAPE.fullmatch(token):
        raise InvalidToken("malformed token")
    try:
        phone = _serializer(secrets).loads(token)
    except itsdangerous.BadData:
        raise InvalidToken("bad signature") from None
    if not isinstance(phone, str) or not E164_SHAPE.fullmatch(phone):
        raise InvalidToken("unexpected payload")
    return phone


def link_maker(secret: str, base_url: str) -> Callable[[str, str], str]:
    """(phone, "link" or "token") -> that recipient's link or token: the template variable source
    `unsubscribe`. The secret and the URL are checked once, here."""
    check_secret(secret)
    unsubscribe_link("+33612345678", base_url, secret)  # refuses a base URL that is not http(s)
    # A partial of a module function, not a closure: rendering's worker processes get it pickled.
    return functools.partial(_link_or_token, secret, base_url)


def _link_or_token(secret: str, base_url: str, phone_e164: str, kind: str) -> str:
    if kind == "token":
        return unsubscribe_token(phone_e164, secret)
    return unsubscribe_link(phone_e164, base_url, secret)
