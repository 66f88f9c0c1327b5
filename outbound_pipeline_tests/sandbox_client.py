"""A client of the sandbox iAdvize over its socket, for the sandbox's own tests: two templates, the
mutation, a login, a send, and the one error of an answer.

Used by test_sandbox.py and test_sandbox_faults.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from outbound_pipeline.config import Template
from outbound_pipeline.sandbox import SandboxServer

ORDER_READY = Template(
    name="order_ready_v1",
    language="fr",
    category="UTILITY",
    body="Bonjour {{1}}, votre commande {{2}} est prête.",
)
WITH_HEADER = Template(
    name="promo_v2",
    language="en_US",
    category="MARKETING",
    header="Hello {{1}}",
    body="Your code is {{1}}, valid until {{2}}.",
)
CAMPAIGN_ID = "5dd2be5a-6aeb-4ef2-8c8d-c78d51e21acf"
MUTATION = (
    "mutation Send($input: WhatsAppOutboundMessageSendInput!) { "
    "whatsAppOutboundMessageSend(whatsAppOutboundMessageSendInput: $input) { messageText messageId } }"
)


def message_input(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "senderId": "33644646081",
        "recipientId": "33757907173",
        "templateName": "order_ready_v1",
        "language": "fr",
        "headerVariables": [],
        "bodyVariables": [{"key": "1", "value": "Alice"}, {"key": "2", "value": "A-42"}],
        "campaignId": CAMPAIGN_ID,
    }
    base.update(overrides)
    return base


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer([ORDER_READY, WITH_HEADER]) as server:
        yield server


@pytest.fixture
def http(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.base_url, timeout=5) as client:
        yield client


def login(http: httpx.Client) -> str:
    response = http.post(
        "/oauth2/token",
        data={"username": "brand-admin", "password": "pw", "grant_type": "password"},
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def send(http: httpx.Client, token: str, **overrides: Any) -> httpx.Response:
    return http.post(
        "/graphql",
        json={
            "query": MUTATION,
            "variables": {"input": message_input(**overrides)},
            "operationName": "Send",
        },
        headers={"Authorization": f"Bearer {token}"},
    )


def only_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] == {"whatsAppOutboundMessageSend": None}
    assert len(body["errors"]) == 1
    return body["errors"][0]
