"""The iAdvize client around login: a lost connection or a malformed answer during login or
introspection is its own error (naming no secret), a mutation answer of the wrong shape is
`unknown`, and the workers of a run introspect the API once.

The send loop's own faults: test_send_loop_faults.py and test_send_loop_waits.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from outbound_pipeline.iadvize import (
    Action,
    IAdvizeError,
    IAdvizeResource,
    OutboundMessage,
    SendResult,
)
from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline_tests.conftest import (
    deliveries_run_config,
    materialize_campaign,
    resources_for,
)
from outbound_pipeline_tests.send_loop_harness import (
    PASSWORD,
    SENDER,
    TOKEN,
    FakeAPI,
    fake_api,
    prepared_day,
)
from outbound_pipeline_tests.stores import Warehouse

__all__ = ["fake_api"]  # a fixture


async def _document(resource: IAdvizeResource) -> str:
    async with resource.client() as client:
        return await client.document()


def _assert_names_no_secret(exc: BaseException) -> None:
    assert PASSWORD not in str(exc) and TOKEN not in str(exc)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_connection_lost_during_introspection_is_an_iadvize_error(
    fake_api: FakeAPI, transport: str
) -> None:
    fake_api.introspection = None
    with pytest.raises(IAdvizeError, match="introspection") as info:
        asyncio.run(_document(fake_api.resource(transport)))
    _assert_names_no_secret(info.value)


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("login", b"<html>maintenance</html>"),
        ("login", b"[]"),
        ("login", b'{"token": "' + TOKEN.encode() + b'"}'),
        ("introspection", b"<html>maintenance</html>"),
        ("introspection", b'"schema"'),
        ("introspection", b'{"data": {"__type": {"fields": [{"args": []}]}}}'),
    ],
)
def test_a_malformed_login_or_introspection_answer_is_an_iadvize_error(
    fake_api: FakeAPI, endpoint: str, body: bytes
) -> None:
    setattr(fake_api, endpoint, (200, body))
    with pytest.raises(
        IAdvizeError, match="login" if endpoint == "login" else "introspection"
    ) as info:
        asyncio.run(_document(fake_api.resource()))
    _assert_names_no_secret(info.value)


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"accepted"',
        b'{"data": {"whatsAppOutboundMessageSend": "m1"}}',
        b'{"errors": ["boom"]}',
        b'{"errors": [{"extensions": "x"}]}',
    ],
)
def test_a_mutation_answer_that_is_not_an_object_is_an_unknown_outcome(
    fake_api: FakeAPI, body: bytes
) -> None:
    # HTTP 200 and the request went out: it may have been accepted, so unknown, never an exception.
    fake_api.mutation = (200, body)
    message = OutboundMessage(
        SENDER, "+33612345678", "order_ready_v1", "fr", [], ["a", "b", "c"], "c-1"
    )

    async def send() -> SendResult:
        async with fake_api.resource().client() as client:
            return await client.send(message)

    assert asyncio.run(send()).verdict.action is Action.UNKNOWN


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_the_mutation_goes_out_as_json_with_the_token_and_no_cookie_the_api_set(
    fake_api: FakeAPI, transport: str
) -> None:
    # The request is built by hand for speed: it must still be what the API expects, and a cookie
    # (a load balancer's, say) must not become session state sent back with every message.
    fake_api.set_cookie = "lb=node-7; Path=/"
    message = OutboundMessage(
        SENDER, "+33612345678", "order_ready_v1", "fr", [], ["Zoé", "Lyon 2e", "12 €"], "c-1"
    )

    async def send_twice() -> list[SendResult]:
        async with fake_api.resource(transport).client() as client:
            return [await client.send(message), await client.send(message)]

    assert [r.verdict.action for r in asyncio.run(send_twice())] == [Action.SENT, Action.SENT]
    mutations = [
        (headers, body)
        for path, headers, body in fake_api.requests
        if path == "/graphql" and b"SendWhatsAppTemplate" in body
    ]
    assert len(mutations) == 2
    for headers, body in mutations:
        assert headers["authorization"] == f"Bearer {TOKEN}"
        assert headers["content-type"] == "application/json"
        assert "cookie" not in headers
        sent = json.loads(body)
        assert sent["operationName"] == "SendWhatsAppTemplate"
        assert sent["variables"]["input"]["recipientId"] == "33612345678"
        assert [v["value"] for v in sent["variables"]["input"]["bodyVariables"]] == [
            "Zoé",
            "Lyon 2e",
            "12 €",
        ]
    assert all("cookie" not in headers for _, headers, _ in fake_api.requests)


def test_the_workers_of_a_run_introspect_the_api_once(
    small: Warehouse, sandbox: SandboxServer
) -> None:
    # Sixteen workers start together: one asks the API for the mutation's input type, the others
    # wait for its answer (each used to ask the same question).
    config, _ = prepared_day(small, sandbox, "customer_id <= 'C000040'")
    resources = resources_for(small, sandbox)
    run_config = deliveries_run_config("faults", concurrency=16, batch_size=10)
    assert materialize_campaign(
        config, "faults", resources, run_config=run_config, selection=["deliveries"]
    ).success
    stats = sandbox.stats()
    assert stats["accepted"] >= 16
    assert (stats["graphql_reads"], stats["logins"]) == (1, 1)
