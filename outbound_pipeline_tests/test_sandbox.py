"""The sandbox iAdvize over a real socket: auth, the mutation's rules and error shapes.

Faults, latency, pair rate and reset: test_sandbox_faults.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from outbound_pipeline.sandbox import SandboxServer
from outbound_pipeline_tests.sandbox_client import (
    CAMPAIGN_ID,
    MUTATION,
    http,
    login,
    only_error,
    sandbox,
    send,
)

# Fixtures: the sandbox of sandbox_client.py, with its two templates rather than the demo's.
__all__ = ["http", "sandbox"]


# --- auth ------------------------------------------------------------------------------------------


def test_login_then_authenticated(sandbox: SandboxServer, http: httpx.Client) -> None:
    response = http.post(
        "/oauth2/token", data={"username": "u", "password": "p", "grant_type": "password"}
    )
    assert response.status_code == 200
    body = response.json()
    assert (
        body["expires_in"] == 86400
        and body["token_type"] == "Bearer"
        and body["refresh_token"] == "none"
    )
    assert len(body["access_token"]) >= 32
    ok = http.get("/_authenticated", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert ok.status_code == 200 and ok.json() == {"authenticated": True}
    assert (
        http.get("/_authenticated", headers={"Authorization": "Bearer forged"}).status_code == 401
    )
    assert http.get("/_authenticated").status_code == 401
    assert sandbox.stats()["logins"] == 1


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"username": "u", "password": "p", "grant_type": "client_credentials"}, 400),
        ({"username": "u", "password": "p"}, 400),
        ({"username": "", "password": "p", "grant_type": "password"}, 401),
        ({"username": "u", "password": "", "grant_type": "password"}, 401),
    ],
)
def test_token_endpoint_refuses_bad_requests(
    sandbox: SandboxServer, http: httpx.Client, form: dict[str, str], status: int
) -> None:
    response = http.post("/oauth2/token", data=form)
    assert response.status_code == status
    assert "access_token" not in response.json()
    assert sandbox.stats()["logins"] == 0


def test_graphql_without_valid_token_is_401(http: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer not-issued"}):
        response = http.post("/graphql", json={"query": MUTATION}, headers=headers)
        assert response.status_code == 401
        assert response.json()["errors"][0]["extensions"]["name"] == "UNAUTHENTICATED"


def test_wrong_content_type_is_415(sandbox: SandboxServer, http: httpx.Client) -> None:
    token = login(http)
    response = http.post(
        "/graphql",
        content=b'{"query": "{ __typename }"}',
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
    )
    assert response.status_code == 415
    assert sandbox.messages() == []


def test_expire_tokens_and_token_ttl(sandbox: SandboxServer, http: httpx.Client) -> None:
    token = login(http)
    sandbox.expire_tokens()
    assert send(http, token).status_code == 401
    sandbox.configure(token_ttl_seconds=0)
    assert send(http, login(http)).status_code == 401, "a token past its expiry must be refused"
    sandbox.configure(token_ttl_seconds=60)
    assert send(http, login(http)).status_code == 200


# --- the mutation ----------------------------------------------------------------------------------


def test_valid_mutation_renders_and_records(sandbox: SandboxServer, http: httpx.Client) -> None:
    response = send(http, login(http))
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body
    result = body["data"]["whatsAppOutboundMessageSend"]
    assert result["messageText"] == "Bonjour Alice, votre commande A-42 est prête."
    assert len(result["messageId"]) == 27 and result["messageId"].isalnum()

    [record] = sandbox.messages()
    received_at = dt.datetime.fromisoformat(record.pop("received_at"))
    assert received_at.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - received_at).total_seconds()) < 10
    assert record == {
        "message_id": result["messageId"],
        "sender_id": "33644646081",
        "recipient_id": "33757907173",
        "template_name": "order_ready_v1",
        "language": "fr",
        "header_variables": [],
        "body_variables": ["Alice", "A-42"],
        "campaign_id": CAMPAIGN_ID,
        "message_text": "Bonjour Alice, votre commande A-42 est prête.",
    }
    stats = sandbox.stats()
    assert (stats["accepted"], stats["graphql_calls"], stats["rejected"]) == (1, 1, 0)


def test_header_is_rendered_above_the_body_and_keys_are_ordered(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    response = send(
        http,
        login(http),
        templateName="promo_v2",
        language="en_US",
        headerVariables=[{"key": "1", "value": "Bob"}],
        bodyVariables=[{"key": "2", "value": "Friday"}, {"key": "1", "value": "XMAS"}],
    )
    text = response.json()["data"]["whatsAppOutboundMessageSend"]["messageText"]
    assert text == "Hello Bob\nYour code is XMAS, valid until Friday."


def test_unknown_template_error_shape(sandbox: SandboxServer, http: httpx.Client) -> None:
    error = only_error(send(http, login(http), language="de"))
    assert error["path"] == ["whatsAppOutboundMessageSend"]
    assert error["message"].startswith("(#132001)")
    assert error["extensions"] == {
        "name": "TEMPLATE_NOT_FOUND",
        "retryPolicy": "NO_RETRY",
        "whatsappCode": 132001,
    }
    assert sandbox.messages() == []
    assert sandbox.stats()["rejected"] == 1


@pytest.mark.parametrize(
    "body_variables",
    [
        [{"key": "1", "value": "Alice"}],
        [
            {"key": "1", "value": "Alice"},
            {"key": "2", "value": "A-42"},
            {"key": "3", "value": "extra"},
        ],
        [{"key": "1", "value": "Alice"}, {"key": "3", "value": "A-42"}],
    ],
)
def test_wrong_variable_count_or_keys(
    sandbox: SandboxServer, http: httpx.Client, body_variables: list[dict[str, str]]
) -> None:
    error = only_error(send(http, login(http), bodyVariables=body_variables))
    assert error["extensions"] == {
        "name": "INVALID_TEMPLATE_PARAMETERS",
        "retryPolicy": "NO_RETRY",
        "whatsappCode": 132000,
    }
    assert sandbox.messages() == []


@pytest.mark.parametrize(
    ("overrides", "extensions"),
    [
        (
            {
                "bodyVariables": [
                    {"key": "1", "value": "Alice\nSmith"},
                    {"key": "2", "value": "A-42"},
                ]
            },
            {
                "name": "INVALID_TEMPLATE_PARAMETERS",
                "retryPolicy": "NO_RETRY",
                "whatsappCode": 132018,
            },
        ),
        (
            {"bodyVariables": [{"key": "1", "value": "Alice"}, {"key": "2", "value": "A      42"}]},
            {
                "name": "INVALID_TEMPLATE_PARAMETERS",
                "retryPolicy": "NO_RETRY",
                "whatsappCode": 132018,
            },
        ),
        ({"recipientId": "+33757907173"}, {"name": "BAD_USER_INPUT", "retryPolicy": "NO_RETRY"}),
        ({"senderId": "1234567"}, {"name": "BAD_USER_INPUT", "retryPolicy": "NO_RETRY"}),
        ({"campaignId": "campaign-1"}, {"name": "BAD_USER_INPUT", "retryPolicy": "NO_RETRY"}),
    ],
)
def test_payload_rules(
    sandbox: SandboxServer,
    http: httpx.Client,
    overrides: dict[str, Any],
    extensions: dict[str, Any],
) -> None:
    error = only_error(send(http, login(http), **overrides))
    assert error["extensions"] == extensions
    assert sandbox.messages() == []


def test_invalid_document_is_200_with_validation_error(
    sandbox: SandboxServer, http: httpx.Client
) -> None:
    token = login(http)
    for _ in range(2):  # the second answer comes from the document cache and must be the same
        response = http.post(
            "/graphql",
            json={"query": "mutation { whatsAppOutboundMessageSend(input: {}) { messageText } }"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200
        errors = response.json()["errors"]
        assert errors and {e["extensions"]["name"] for e in errors} == {"GRAPHQL_VALIDATION_FAILED"}
    assert sandbox.messages() == []


def test_introspection_names_the_input_type(http: httpx.Client) -> None:
    query = '{ __type(name: "Mutation") { fields { name args { name type { kind name ofType { kind name } } } } } }'
    response = http.post(
        "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {login(http)}"}
    )
    fields = {f["name"]: f for f in response.json()["data"]["__type"]["fields"]}
    [arg] = fields["whatsAppOutboundMessageSend"]["args"]
    assert arg["name"] == "whatsAppOutboundMessageSendInput"
    assert arg["type"] == {
        "kind": "NON_NULL",
        "name": None,
        "ofType": {"kind": "INPUT_OBJECT", "name": "WhatsAppOutboundMessageSendInput"},
    }
