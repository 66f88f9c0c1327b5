"""Unsubscribe: signed links (pure), the per-client rate (pure), and the suppression list on SQLite
and on the PostgreSQL server."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
from collections.abc import Iterator

import itsdangerous
import phonenumbers
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from outbound_pipeline.unsubscribe import (
    MAX_TOKEN_LENGTH,
    OLD_SECRETS_ENV,
    SECRET_ENV,
    InvalidToken,
    RateLimit,
    SuppressionSource,
    UnsubscribeSecretError,
    create_suppressions_table,
    is_suppressed,
    list_suppressions,
    read_token,
    suppress,
    unsubscribe_link,
    unsubscribe_token,
    verifying_secrets_from_env,
)
from outbound_pipeline.unsubscribe.ratelimit import ClientBuckets, client_key
from outbound_pipeline.warehouse import create_engine
from outbound_pipeline_tests.stores import postgres_server_url, scratch_postgres_database

SECRET = "test-secret-0123456789-abcdefghijklmnop"
PHONE = "+33612345678"
URL_SAFE = re.compile(r"[A-Za-z0-9_.\-]+")
# Mobile numbers of every region libphonenumber has an example for.
MOBILES = sorted(
    phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
    for region in phonenumbers.SUPPORTED_REGIONS
    if (n := phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE))
)


@given(phone=st.sampled_from(MOBILES))
@settings(max_examples=100)
def test_a_token_reads_back_its_phone_and_fits_a_template_parameter(phone: str) -> None:
    token = unsubscribe_token(phone, SECRET)
    assert read_token(token, SECRET) == phone
    # A WhatsApp parameter: short, URL-safe, no whitespace.
    assert len(token) <= 100 and URL_SAFE.fullmatch(token)


def test_a_link_is_the_base_url_and_the_token() -> None:
    link = unsubscribe_link(PHONE, "https://unsubscribe.example.com/", SECRET)
    assert link == "https://unsubscribe.example.com/u/" + unsubscribe_token(PHONE, SECRET)
    with pytest.raises(ValueError, match="https://"):
        unsubscribe_link(PHONE, "unsubscribe.example.com", SECRET)


@given(position=st.integers(min_value=0), replacement=st.sampled_from("AZaz09-_."))
@settings(max_examples=300)
def test_a_changed_character_never_reads_as_another_phone(position: int, replacement: str) -> None:
    token = unsubscribe_token(PHONE, SECRET)
    position %= len(token)
    tampered = token[:position] + replacement + token[position + 1 :]
    with contextlib.suppress(InvalidToken):
        assert read_token(tampered, SECRET) == PHONE  # base64's spare bits: the same bytes


def test_tampered_truncated_oversized_and_foreign_tokens_are_refused() -> None:
    token = unsubscribe_token(PHONE, SECRET)
    other = unsubscribe_token("+33698765432", SECRET)
    forged = other.split(".")[0] + "." + token.split(".")[1]  # another phone, this signature
    foreign = itsdangerous.URLSafeSerializer(SECRET).dumps(PHONE)  # same secret, another salt
    not_a_phone = itsdangerous.URLSafeSerializer(
        SECRET,
        salt="outbound_pipeline.unsubscribe.v1",
        signer_kwargs={"digest_method": hashlib.sha256},
    ).dumps(["+33612345678"])
    for bad in (
        forged,
        token[:-4],
        token.split(".")[0],
        token + "A" * MAX_TOKEN_LENGTH,
        "",
        "not a token",
        "../../etc/passwd",
        "é.é",
        foreign,
        not_a_phone,
    ):
        with pytest.raises(InvalidToken):
            read_token(bad, SECRET)
    with pytest.raises(InvalidToken):
        read_token(token, SECRET[::-1])


def test_a_link_signed_before_a_rotation_still_reads() -> None:
    old = "retired-secret-0123456789-abcdefghijkl"
    token = unsubscribe_token(PHONE, old)
    secrets = verifying_secrets_from_env({SECRET_ENV: SECRET, OLD_SECRETS_ENV: old})
    assert secrets == (old, SECRET)
    assert read_token(token, secrets) == PHONE
    assert read_token(unsubscribe_token(PHONE, SECRET), secrets) == PHONE


def test_a_missing_or_short_secret_is_refused_naming_the_variable_not_the_value() -> None:
    with pytest.raises(UnsubscribeSecretError, match=SECRET_ENV):
        verifying_secrets_from_env({})
    with pytest.raises(UnsubscribeSecretError, match=SECRET_ENV) as short:
        verifying_secrets_from_env({SECRET_ENV: "hunter2-but-short"})
    assert "hunter2" not in str(short.value)
    with pytest.raises(UnsubscribeSecretError, match=OLD_SECRETS_ENV):
        verifying_secrets_from_env({SECRET_ENV: SECRET, OLD_SECRETS_ENV: "short"})
    with pytest.raises(UnsubscribeSecretError):
        unsubscribe_link(PHONE, "https://u.example.com", "")


def test_no_link_for_a_number_that_is_not_e164() -> None:
    for bad in ("0612345678", "+3361234", "+33 6 12 34 56 78"):
        with pytest.raises(ValueError) as error:
            unsubscribe_token(bad, SECRET)
        assert "12345678" not in str(error.value)  # the message masks it


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_gets_its_burst_then_its_rate_and_others_are_not_affected() -> None:
    clock = FakeClock()
    buckets = ClientBuckets(RateLimit(per_minute=60, burst=3, max_clients=100), clock)
    assert [buckets.allow("a")[0] for _ in range(4)] == [True, True, True, False]
    assert buckets.allow("a")[1] == pytest.approx(1.0)
    assert buckets.allow("b") == (True, 0.0)
    clock.now += 1.0  # one a second
    assert buckets.allow("a")[0] and not buckets.allow("a")[0]


def test_the_clients_tracked_are_bounded() -> None:
    buckets = ClientBuckets(RateLimit(per_minute=1, burst=1, max_clients=50), FakeClock())
    for n in range(1000):
        buckets.allow(f"10.0.{n // 256}.{n % 256}")
        assert len(buckets) <= 50


def test_a_client_is_its_ipv4_address_or_its_ipv6_64() -> None:
    assert client_key(("203.0.113.7", 5000)) == "203.0.113.7"
    assert client_key(("::ffff:203.0.113.7", 5000)) == "203.0.113.7"
    assert client_key(("2001:db8:1:2:aaaa::1", 1)) == client_key(("2001:db8:1:2:bbbb::9", 2))
    assert client_key(("2001:db8:1:2::1", 1)) != client_key(("2001:db8:1:3::1", 1))
    assert client_key(None) == "unknown"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def state_engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[sa.Engine]:  # type: ignore[no-untyped-def]
    """An empty state store with outbound_suppressions, on each backend."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'state.sqlite'}")
        create_suppressions_table(engine)
        yield engine
        engine.dispose()
        return
    with scratch_postgres_database(postgres_server_url(), "outbound_unsub") as url:  # type: ignore[arg-type]
        engine = create_engine(url)
        create_suppressions_table(engine)
        try:
            yield engine
        finally:
            engine.dispose()


def test_the_suppression_list(state_engine: sa.Engine) -> None:
    first = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
    with state_engine.begin() as conn:
        suppress(conn, PHONE, SuppressionSource.LINK, first)
    with state_engine.begin() as conn:  # a second click, later, another way: the first one stays
        suppress(conn, PHONE, SuppressionSource.CLI, first + dt.timedelta(days=3))
        suppress(conn, "+33698765432", SuppressionSource.CLI, first + dt.timedelta(hours=1))
    many = [f"+3361{n:07d}" for n in range(12_000)]  # more than one query's worth
    with state_engine.connect() as conn:
        asked = [*many, PHONE, PHONE, "+33698765432"]
        assert is_suppressed(conn, asked) == {PHONE, "+33698765432"}
        assert is_suppressed(conn, []) == set()
        listed = list_suppressions(conn)
    assert [(s.phone, s.source, s.suppressed_at) for s in listed] == [
        (PHONE, "link", first),
        ("+33698765432", "cli", first + dt.timedelta(hours=1)),
    ]
    with state_engine.begin() as conn, pytest.raises(ValueError):
        suppress(conn, "0612345678", SuppressionSource.CLI, first)
