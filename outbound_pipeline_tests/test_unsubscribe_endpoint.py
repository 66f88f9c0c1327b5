"""The unsubscribe endpoint over a real socket (uvicorn on a loopback port, in a thread): what
records an opt-out and what never does, its answers, its limits, its logs, and its least rights on
PostgreSQL. Every test ends by checking that nothing it logged holds a phone, a token or a secret."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from outbound_pipeline.unsubscribe import (
    SECRET_ENV,
    EndpointThread,
    RateLimit,
    Suppression,
    SuppressionSource,
    create_app,
    create_suppressions_table,
    list_suppressions,
    suppress,
    unsubscribe_token,
)
from outbound_pipeline.unsubscribe.__main__ import main as unsubscribe_command
from outbound_pipeline.unsubscribe.pages import CONFIRM, DONE, INVALID_LINK, WRONG_METHOD
from outbound_pipeline.warehouse import create_engine
from outbound_pipeline_tests.stores import postgres_server_url, scratch_postgres_database

SECRET = "current-secret-0123456789-abcdefghijkl"
RETIRED = "a-link-sent-in-2026-0123456789abcdefgh"
# Made once with RETIRED, kept as it was sent: a token must never expire nor change format.
SENT_IN_2026 = ("+33611112222", "IiszMzYxMTExMjIyMiI.JgCzo6tgPFtJmvW4FTLgjHqn8_a4W3KN95tu4SmUOAo")
ONE_CLICK = {"content-type": "application/x-www-form-urlencoded"}
T0 = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)


class Collected(logging.Handler):
    """Every log record of the process while a test runs, formatted with any traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # The test's own HTTP client logs the URLs it requests; the endpoint is what is checked.
        if not record.name.startswith(("httpx", "httpcore")):
            self.lines.append(f"{record.name} {logging.Formatter().format(record)}")


@dataclass
class Endpoint:
    url: str
    engine: sa.Engine
    now: list[dt.datetime]
    handler: Collected
    phones: set[str] = field(default_factory=set)
    tokens: set[str] = field(default_factory=set)

    def link(self, phone: str, secret: str = SECRET) -> str:
        token = unsubscribe_token(phone, secret)
        self.phones.add(phone)
        self.tokens.add(token)
        return f"{self.url}/u/{token}"

    def recorded(self) -> list[Suppression]:
        with self.engine.connect() as conn:
            return list_suppressions(conn)

    def assert_logs_clean(self) -> None:
        text = "\n".join(self.handler.lines)
        for secret in (SECRET, RETIRED):
            assert secret not in text
        for token in self.tokens:
            assert token not in text
            assert all(part not in text for part in token.split("."))
        for phone in self.phones:
            assert phone.lstrip("+") not in text


@contextlib.contextmanager
def running_endpoint(
    tmp_path: Path, rate_limit: RateLimit | None = None, create_table: bool = True
) -> Iterator[Endpoint]:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.sqlite'}")
    if create_table:
        create_suppressions_table(engine)
    now = [T0]
    handler, root = Collected(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    app = create_app(
        (RETIRED, SECRET),
        engine,
        rate_limit=rate_limit or RateLimit(per_minute=6000, burst=1000),
        now=lambda: now[0],
        body_timeout=0.5,
    )
    # uvicorn's access and ASGI loggers do not propagate to the root: they get the handler too,
    # once uvicorn has set them up, as a deployment's logging setup may do.
    path_loggers = [logging.getLogger(name) for name in ("uvicorn.access", "uvicorn.asgi")]
    try:
        with EndpointThread(app) as thread:
            for logger in path_loggers:
                logger.addHandler(handler)
            endpoint = Endpoint(thread.base_url, engine, now, handler)
            yield endpoint
        endpoint.assert_logs_clean()
        assert any("outbound_pipeline.unsubscribe" in line for line in handler.lines)
    finally:
        for logger in (root, *path_loggers):
            logger.removeHandler(handler)
        root.setLevel(level)
        engine.dispose()


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Endpoint]:
    with running_endpoint(tmp_path) as running:
        yield running


def test_get_shows_the_confirm_button_and_records_nothing(endpoint: Endpoint) -> None:
    link = endpoint.link("+33612345678")
    page = httpx.get(link)
    assert (page.status_code, page.content) == (200, CONFIRM.body)
    assert b'<form method="post"' in page.content
    assert page.headers["referrer-policy"] == "no-referrer"
    assert httpx.head(link).status_code == 200
    assert endpoint.recorded() == []


def test_post_records_the_opt_out_and_a_second_click_keeps_the_first(endpoint: Endpoint) -> None:
    link = endpoint.link("+33612345678")
    first = httpx.post(link, content="List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert (first.status_code, first.content) == (200, DONE.body)
    assert endpoint.recorded() == [Suppression("+33612345678", "link", T0)]
    endpoint.now[0] = T0 + dt.timedelta(days=2)
    again = httpx.post(link, data={"List-Unsubscribe": "One-Click"})  # the confirm button
    assert (again.status_code, again.content) == (200, DONE.body)
    assert endpoint.recorded() == [Suppression("+33612345678", "link", T0)]


def test_an_old_link_records_whatever_its_age(endpoint: Endpoint) -> None:
    phone, token = SENT_IN_2026
    endpoint.phones.add(phone)
    endpoint.tokens.add(token)
    assert httpx.post(f"{endpoint.url}/u/{token}").status_code == 200
    assert httpx.post(endpoint.link("+33698765432", RETIRED)).status_code == 200
    assert {s.phone for s in endpoint.recorded()} == {phone, "+33698765432"}


def test_known_and_unknown_phones_get_the_same_answer_byte_for_byte(endpoint: Endpoint) -> None:
    known, unknown = endpoint.link("+33612345678"), endpoint.link("+33698765432")
    with endpoint.engine.begin() as conn:
        suppress(conn, "+33612345678", SuppressionSource.CLI, T0)
    for method in ("GET", "POST"):
        answers = [httpx.request(method, link) for link in (known, unknown)]
        a, b = ((r.status_code, r.headers.raw, r.content) for r in answers)
        assert a == b
        assert "date" not in answers[0].headers and "server" not in answers[0].headers


def test_bad_tokens_get_the_clear_page_and_record_nothing(endpoint: Endpoint) -> None:
    token = unsubscribe_token("+33612345678", SECRET)
    other = unsubscribe_token("+33698765432", SECRET)
    endpoint.tokens.update((token, other))
    endpoint.phones.update(("+33612345678", "+33698765432"))
    payload, signature = token.split(".")
    bad = {
        "tampered": other.split(".")[0] + "." + signature,
        "truncated": token[:-6],
        "signature cut off": payload,
        "oversized": token + "A" * 1000,
        "malformed": "<script>alert(1)</script>",
        "slashes": f"{payload}/{signature}",
        "percent-encoded": "%00%ff%2e%2e",
        "unicode": "jeton.é",
        "empty": "",
        "another key": unsubscribe_token("+33612345678", "z" * 40),
    }
    for name, value in bad.items():
        for method in ("GET", "POST"):
            answer = httpx.request(method, f"{endpoint.url}/u/{value}")
            assert (answer.status_code, answer.content) == (400, INVALID_LINK.body), name
    assert endpoint.recorded() == []


def test_other_methods_and_paths_record_nothing(endpoint: Endpoint) -> None:
    link = endpoint.link("+33612345678")
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        answer = httpx.request(method, link)
        assert (answer.status_code, answer.content) == (405, WRONG_METHOD.body)
        assert answer.headers["allow"] == "GET, HEAD, POST"
    assert httpx.get(f"{endpoint.url}/").status_code == 404
    assert httpx.post(link.replace("/u/", "/unsubscribe/")).status_code == 404
    assert endpoint.recorded() == []


def raw_exchange(url: str, request: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes as they are on a new connection; what comes back until the server closes it."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(request)
        answer = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := conn.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and b"</html>" in answer:
                    break
        return answer


def test_oversized_and_slow_requests_are_refused_and_record_nothing(endpoint: Endpoint) -> None:
    path = endpoint.link("+33612345678").removeprefix(endpoint.url)
    # 100 MB announced and none sent: the answer comes without reading any of it.
    huge = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n".encode()
    assert raw_exchange(endpoint.url, huge).startswith(b"HTTP/1.1 413 ")
    chunked = httpx.post(f"{endpoint.url}{path}", content=(b"x" * 512 for _ in range(20)))
    assert chunked.status_code == 413
    slow = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 26\r\n\r\nList".encode()
    assert raw_exchange(endpoint.url, slow).startswith(b"HTTP/1.1 408 ")
    long_head = f"GET {path}?{'a' * 20_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    assert raw_exchange(endpoint.url, long_head).startswith(b"HTTP/1.1 400 ")
    many_headers = "".join(f"X-Filler-{n}: {'b' * 100}\r\n" for n in range(100))
    big_head = f"GET {path} HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n".encode()
    assert raw_exchange(endpoint.url, big_head).startswith(b"HTTP/1.1 431 ")
    assert httpx.get(f"{endpoint.url}{path}").status_code == 200  # still answering
    assert endpoint.recorded() == []


async def _flood(url: str, requests: int) -> list[int]:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        answers = await asyncio.gather(*(client.post(url) for _ in range(requests)))
    return [a.status_code for a in answers]


def test_a_flood_gets_429s_records_nothing_and_another_client_is_served(tmp_path: Path) -> None:
    with running_endpoint(tmp_path, RateLimit(per_minute=1, burst=5)) as endpoint:
        token = unsubscribe_token("+33612345678", SECRET)
        tampered = f"{endpoint.url}/u/{token[:-3]}xyz"
        endpoint.tokens.add(token)
        statuses = asyncio.run(_flood(tampered, 100))
        assert statuses.count(400) == 5 and statuses.count(429) == 95
        refused = httpx.post(endpoint.link("+33698765432"))
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        # Another client (another loopback address) is served, and its opt-out recorded.
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=transport) as other:
            assert other.get(endpoint.link("+33655555555")).status_code == 200
            assert other.post(endpoint.link("+33655555555")).status_code == 200
        assert [s.phone for s in endpoint.recorded()] == ["+33655555555"]


def test_a_database_failure_answers_try_again_and_logs_no_phone(tmp_path: Path) -> None:
    with running_endpoint(tmp_path, create_table=False) as endpoint:
        answer = httpx.post(endpoint.link("+33612345678"))
        assert answer.status_code == 503
        assert any("could not record an opt-out" in line for line in endpoint.handler.lines)


def test_the_command_serves_and_documents_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit):
        unsubscribe_command(["--help"])
    helped = capsys.readouterr().out
    for word in ("--port", "--host", "--db-url", "--create-table", "--rate-per-minute", "--burst"):
        assert word in helped
    for word in ("--max-clients", "--forwarded-allow-ips", "--proxy-headers", SECRET_ENV):
        assert word in helped
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(SystemExit) as missing:
        unsubscribe_command(["--port", "0"])
    assert missing.value.code == 2 and SECRET_ENV in capsys.readouterr().err
    command = [sys.executable, "-m", "outbound_pipeline.unsubscribe"]
    database = tmp_path / "state.sqlite"
    env = {**os.environ, SECRET_ENV: SECRET, "OUTBOUND_UNSUBSCRIBE_DB_URL": f"sqlite:///{database}"}
    server = subprocess.Popen(
        [*command, "--port", "0", "--create-table"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        announced = server.stdout.readline()  # type: ignore[union-attr]
        url = announced.split(" listening on ")[1].split("/u/")[0]
        token = unsubscribe_token("+33612345678", SECRET)
        assert httpx.post(f"{url}/u/{token}", timeout=10).status_code == 200
    finally:
        server.terminate()
        out, err = server.communicate(timeout=10)
    assert token not in announced + out + err and "33612345678" not in out + err
    assert "POST /u/<token> 200" in err
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        assert [s.phone for s in list_suppressions(conn)] == ["+33612345678"]
    engine.dispose()


@pytest.mark.postgres
def test_a_role_that_may_only_insert_suppressions_runs_the_endpoint() -> None:
    role = f"outbound_unsub_{uuid.uuid4().hex[:8]}"
    server_url = postgres_server_url()
    try:
        with scratch_postgres_database(server_url, "outbound_unsub") as url:  # type: ignore[arg-type]
            owner = create_engine(url)
            create_suppressions_table(owner)
            database = sa.make_url(url).database
            with owner.begin() as conn:  # the GRANTs of docs/unsubscribe.md
                conn.exec_driver_sql("CREATE TABLE brand_secrets (x integer)")
                conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
                conn.exec_driver_sql(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"')
                conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA public TO "{role}"')
                conn.exec_driver_sql(f'GRANT INSERT ON outbound_suppressions TO "{role}"')
            least = create_engine(sa.make_url(url).set(username=role).render_as_string())
            try:
                _check_least_rights(least, owner)
            finally:
                least.dispose()
                owner.dispose()
    finally:  # its grants went with the database; the role is the server's
        admin = create_engine(server_url)  # type: ignore[arg-type]
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        admin.dispose()


def _check_least_rights(least: sa.Engine, owner: sa.Engine) -> None:
    assert sa.inspect(least).has_table("outbound_suppressions")  # the command's check at start
    app = create_app(SECRET, least, now=lambda: T0)
    with EndpointThread(app) as thread:
        link = f"{thread.base_url}/u/{unsubscribe_token('+33612345678', SECRET)}"
        assert httpx.post(link).status_code == 200
        assert httpx.post(link).status_code == 200  # a second click: a conflict, still fine
    with owner.connect() as conn:
        assert list_suppressions(conn) == [Suppression("+33612345678", "link", T0)]
    for statement in (
        "SELECT phone FROM outbound_suppressions",
        "DELETE FROM outbound_suppressions",
        "UPDATE outbound_suppressions SET source = 'cli'",
        "SELECT x FROM brand_secrets",
        "INSERT INTO brand_secrets VALUES (1)",
        "CREATE TABLE intruder (x integer)",
    ):
        with least.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission"):
            conn.exec_driver_sql(statement)
