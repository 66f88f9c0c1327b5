"""The sandbox iAdvize over a real socket: its faults, latency, pair rate and reset.

Auth and the mutation's rules: test_sandbox.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from outbound_pipeline.sandbox import FaultConfig, SandboxServer, create_app
from outbound_pipeline_tests.sandbox_client import (
    MUTATION,
    ORDER_READY,
    http,
    login,
    message_input,
    only_error,
    sandbox,
    send,
)

# Fixtures: the sandbox of sandbox_client.py, with its two templates rather than the demo's.
__all__ = ["http", "sandbox"]


# --- faults ----------------------------------------------------------------------------------------


def test_http_429_has_retry_after_and_records_nothing(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    token = login(http)
    sandbox.configure(faults={"rate": 1.0, "kinds": ["http_429"], "retry_after_seconds": 2})
    response = send(http, token)
    assert response.status_code == 429 and response.headers["Retry-After"] == "2"
    sandbox.configure(faults={"rate": 1.0, "kinds": ["http_429"], "retry_after_seconds": 0.25})
    assert send(http, token).headers["Retry-After"] == "0.25"
    assert sandbox.messages() == []
    assert sandbox.stats()["faults"] == {"http_429": 2}


@pytest.mark.parametrize("status", [500, 502])
def test_http_5xx_records_nothing(sandbox: SandboxServer, http: httpx.Client, status: int) -> None:
    token = login(http)
    sandbox.configure(faults=FaultConfig(rate=1.0, kinds=[f"http_{status}"]))
    assert send(http, token).status_code == status
    assert sandbox.messages() == []
    sandbox.configure(faults={"rate": 0})
    assert send(http, token).status_code == 200
    assert len(sandbox.messages()) == 1


def test_gateway_timeout_records_the_message_then_answers_504(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    token = login(http)
    sandbox.configure(faults=FaultConfig(rate=1.0, kinds=["http_504"]))
    response = send(http, token)
    assert response.status_code == 504 and "Gateway Timeout" in response.text
    # Sent all the same: a client that resent it would message the customer twice.
    assert len(sandbox.messages()) == 1
    assert sandbox.stats()["faults"] == {"http_504": 1}


def test_whatsapp_error_shape(sandbox: SandboxServer, http: httpx.Client) -> None:
    token = login(http)
    sandbox.configure(faults={"rate": 1.0, "kinds": ["wa_131056"]})
    assert only_error(send(http, token)) == {
        "message": "(#131056) Pair rate limit hit",
        "path": ["whatsAppOutboundMessageSend"],
        "extensions": {"name": "WHATSAPP_ERROR", "retryPolicy": "RETRY", "whatsappCode": 131056},
    }
    sandbox.configure(faults={"rate": 1.0, "kinds": ["wa_368"]})
    assert only_error(send(http, token))["extensions"]["retryPolicy"] == "NO_RETRY"
    assert sandbox.messages() == []


def test_faults_spare_introspection(sandbox: SandboxServer, http: httpx.Client) -> None:
    token = login(http)
    sandbox.configure(faults={"rate": 1.0, "kinds": ["http_500"]})
    response = http.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200 and response.json() == {"data": {"__typename": "Query"}}


def test_timeout_after_receive_records_the_message(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    token = login(http)
    sandbox.configure(faults={"rate": 1.0, "kinds": ["timeout_after_receive"], "hang_seconds": 3})
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        http.post(
            "/graphql",
            json={"query": MUTATION, "variables": {"input": message_input()}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=0.3,
        )
    assert time.monotonic() - started < 2
    [record] = sandbox.messages()
    assert record["recipient_id"] == "33757907173"
    assert sandbox.stats()["faults"] == {"timeout_after_receive": 1}


def test_drop_after_accept_cuts_the_connection_and_records(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    token = login(http)
    sandbox.configure(faults={"rate": 1.0, "kinds": ["drop_after_accept"]})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        send(http, token)
    assert len(sandbox.messages()) == 1
    sandbox.configure(faults={"rate": 0})
    assert send(http, token).status_code == 200, (
        "the server must keep serving after a cut connection"
    )


def test_drop_after_accept_in_process_raises_an_httpx_error() -> None:
    app = create_app([ORDER_READY], faults=FaultConfig(rate=1.0, kinds=["drop_after_accept"]))

    async def scenario() -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sandbox"
        ) as client:
            token = (
                await client.post(
                    "/oauth2/token",
                    data={"username": "u", "password": "p", "grant_type": "password"},
                )
            ).json()["access_token"]
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(
                    "/graphql",
                    json={"query": MUTATION, "variables": {"input": message_input()}},
                    headers={"Authorization": f"Bearer {token}"},
                )

    asyncio.run(scenario())
    assert len(app.state.sandbox.records()) == 1


def test_expired_token_fault_forces_a_new_login(sandbox: SandboxServer, http: httpx.Client) -> None:
    token = login(http)
    sandbox.configure(faults={"rate": 1.0, "kinds": ["expired_token"], "min_token_age_seconds": 0})
    response = send(http, token)
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["name"] == "UNAUTHENTICATED"
    assert (
        http.get("/_authenticated", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    )
    sandbox.configure(faults={"rate": 0})
    assert send(http, token).status_code == 401, "the invalidated token must stay invalid"
    assert send(http, login(http)).status_code == 200
    assert sandbox.stats()["logins"] == 2 and len(sandbox.messages()) == 1


def test_expired_token_fault_spares_a_token_just_issued(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    sandbox.configure(
        faults={"rate": 1.0, "kinds": ["expired_token"], "min_token_age_seconds": 0.3}
    )
    token = login(http)
    assert send(http, token).status_code == 200, (
        "a fresh token must not expire (the retry after a re-login)"
    )
    time.sleep(0.35)
    assert send(http, token).status_code == 401
    assert sandbox.stats()["faults"] == {"expired_token": 1}


def test_seeded_faults_are_reproducible(sandbox: SandboxServer, http: httpx.Client) -> None:
    token = login(http)
    faults = {"rate": 0.5, "kinds": ["http_500", "wa_131000"], "seed": 42}

    def outcomes() -> list[str]:
        out = []
        for i in range(20):
            response = send(http, token, recipientId=f"3361234{i:04d}")
            out.append(
                "500"
                if response.status_code == 500
                else ("error" if "errors" in response.json() else "ok")
            )
        return out

    sandbox.configure(faults=faults)
    first = outcomes()
    sandbox.configure(faults=faults)
    assert outcomes() == first
    assert {"500", "error", "ok"} <= set(first)


def test_config_refuses_unknown_fault_kinds(sandbox: SandboxServer) -> None:
    with pytest.raises(ValueError, match="unknown fault kinds"):
        sandbox.configure(faults={"rate": 0.5, "kinds": ["http_418"]})


def test_config_refuses_an_unknown_key_and_names_the_accepted_ones(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    response = http.post("/_sandbox/config", json={"latncy_ms": 300, "token_ttl_seconds": 60})
    assert response.status_code == 400
    assert response.json() == {
        "error": "unknown settings ['latncy_ms']; accepted: "
        "conversations, enforce_pair_rate_seconds, faults, ip_login_limit_per_minute, "
        "latency_ms, login_limit_per_minute, token_ttl_seconds"
    }
    # Nothing is applied when one key is refused, the known ones included.
    assert (sandbox.state.latency_ms, sandbox.state.token_ttl_seconds) == (0, 86400)


# --- latency, pair rate, reset ---------------------------------------------------------------------


def test_latency_is_applied(sandbox: SandboxServer, http: httpx.Client) -> None:
    token = login(http)
    sandbox.configure(latency_ms=300)
    started = time.monotonic()
    assert send(http, token).status_code == 200
    assert time.monotonic() - started >= 0.3
    sandbox.configure(latency_ms=0)
    started = time.monotonic()
    assert send(http, token, recipientId="33757907174").status_code == 200
    assert time.monotonic() - started < 0.25


def test_pair_rate_enforcement(sandbox: SandboxServer, http: httpx.Client) -> None:
    token = login(http)
    sandbox.configure(enforce_pair_rate_seconds=0.5)
    assert send(http, token).status_code == 200
    error = only_error(send(http, token))
    assert error["extensions"] == {
        "name": "WHATSAPP_ERROR",
        "retryPolicy": "RETRY",
        "whatsappCode": 131056,
    }
    assert "errors" not in send(http, token, recipientId="33757907174").json(), (
        "other recipients are free"
    )
    time.sleep(0.55)
    assert "errors" not in send(http, token).json()
    assert len(sandbox.messages()) == 3
    assert sandbox.stats()["pair_rate_limited"] == 1


def test_reset_clears_records_and_counters_but_keeps_tokens(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    token = login(http)
    assert send(http, token).status_code == 200
    sandbox.reset()
    assert sandbox.messages() == []
    assert sandbox.stats()["graphql_calls"] == 0 and sandbox.stats()["logins"] == 0
    assert send(http, token).status_code == 200


def test_fast_path_answers_like_the_graphql_executor(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    """Plain variables take the sandbox's shortcut; a single object where a list is expected is
    coerced by graphql-core's executor. Both must answer the same, errors included."""
    token = login(http)
    query = (
        "mutation Send($in: WhatsAppOutboundMessageSendInput!) { sent: whatsAppOutboundMessageSend("
        "whatsAppOutboundMessageSendInput: $in) { text: messageText messageId __typename } }"
    )

    def post(**overrides: Any) -> dict[str, Any]:
        variables = {"in": message_input(templateName="promo_v2", language="en_US", **overrides)}
        response = http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200
        return response.json()

    body = [{"key": "1", "value": "XMAS"}, {"key": "2", "value": "Friday"}]
    as_list = post(headerVariables=[{"key": "1", "value": "Bob"}], bodyVariables=body)
    as_object = post(headerVariables={"key": "1", "value": "Bob"}, bodyVariables=body)
    for answer in (as_list, as_object):
        assert answer["data"]["sent"].pop("messageId")
    assert (
        as_list
        == as_object
        == {
            "data": {
                "sent": {
                    "text": "Hello Bob\nYour code is XMAS, valid until Friday.",
                    "__typename": "WhatsAppOutboundMessageSendPayload",
                }
            }
        }
    )
    wrong = [{"key": "1", "value": "XMAS"}]
    error_list = post(headerVariables=[{"key": "1", "value": "Bob"}], bodyVariables=wrong)
    error_object = post(headerVariables={"key": "1", "value": "Bob"}, bodyVariables=wrong)
    assert error_list == error_object
    assert error_list["data"] == {"sent": None} and error_list["errors"][0]["path"] == ["sent"]
    assert error_list["errors"][0]["extensions"]["whatsappCode"] == 132000
    assert len(sandbox.messages()) == 2
