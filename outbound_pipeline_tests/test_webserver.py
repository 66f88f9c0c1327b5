"""The code location as an analyst sees it: the Dagster webserver on loopback, queried through its
GraphQL API like any client. Each campaign's lineage (warehouse -> audience -> messages -> deliveries
-> conversations -> report), its schedules and jobs, and the documented columns of the deliveries
asset."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from outbound_pipeline.config import load_config
from outbound_pipeline.warehouse import deliveries

# One webserver for the module: its tests on one xdist worker (--dist loadgroup), not one each.
pytestmark = [pytest.mark.cli, pytest.mark.xdist_group("webserver")]
STARTUP_SECONDS = 120  # a bound: four test workers on two cores slow its start

ASSETS_QUERY = """
query Lineage {
  assetNodes {
    assetKey { path }
    dependencyKeys { path }
    groupName
    kinds
    description
    owners { ... on UserAssetOwner { email } ... on TeamAssetOwner { team } }
  }
}
"""

REPOSITORY_QUERY = """
query Repository {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        schedules { name cronSchedule executionTimezone pipelineName }
        sensors { name }
        jobs { name }
      }
    }
  }
}
"""

COLUMNS_QUERY = """
query Columns($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    __typename
    ... on AssetNode {
      metadataEntries {
        label
        __typename
        ... on TableSchemaMetadataEntry {
          schema { columns { name type description constraints { nullable } } }
        }
      }
    }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("dagster_home")
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "OUTBOUND_HOME": str(home / "outbound"),
        "IADVIZE_MODE": "sandbox",
    }
    for name in ("OUTBOUND_WAREHOUSE_URL", "OUTBOUND_CONFIG", "OUTBOUND_ALERT_WEBHOOK_URL"):
        env.pop(name, None)
    command = [
        str(Path(sys.executable).with_name("dagster-webserver")),
        "-m",
        "outbound_pipeline.definitions",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    log = (home / "webserver.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"dagster-webserver exited with {process.returncode}:\n{(home / 'webserver.log').read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{base}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"dagster-webserver did not answer within {STARTUP_SECONDS}s:\n{(home / 'webserver.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def graphql(base: str, query: str, **variables: Any) -> dict[str, Any]:
    # The code location loads in the background: retry while it is not there yet.
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        response = httpx.post(
            f"{base}/graphql", json={"query": query, "variables": variables}, timeout=30
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        data = body["data"]
        if (
            data.get("assetNodes")
            or data.get("repositoriesOrError", {}).get("nodes")
            or data.get("assetNodeOrError", {}).get("__typename") == "AssetNode"
        ):
            return data
        if time.monotonic() > deadline:
            return data
        time.sleep(0.5)


def test_lineage_of_each_campaign(webserver: str) -> None:
    nodes = graphql(webserver, ASSETS_QUERY)["assetNodes"]
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    deps = {key: {"/".join(d["path"]) for d in n["dependencyKeys"]} for key, n in by_key.items()}
    config = load_config()
    for campaign in config.campaigns:
        k = campaign.key
        assert deps[f"{k}/messages"] == {f"{k}/audience"}
        assert deps[f"{k}/deliveries"] == {f"{k}/messages"}
        assert deps[f"{k}/conversations"] == {f"{k}/deliveries"}
        assert deps[f"{k}/report"] == {f"{k}/deliveries", f"{k}/conversations"}
        assert f"warehouse/{config.consents_table}" in deps[f"{k}/audience"]
        for name in ("audience", "messages", "deliveries", "conversations", "report"):
            node = by_key[f"{k}/{name}"]
            assert node["groupName"] == k and node["kinds"] and node["description"]
            assert [o.get("email") for o in node["owners"]] == campaign.owners
    assert {"warehouse/customers", "warehouse/orders", "warehouse/offer_calendar"} <= set(by_key)
    assert by_key["warehouse/customers"]["groupName"] == "warehouse"


def test_schedules_jobs_and_sensors(webserver: str) -> None:
    repositories = graphql(webserver, REPOSITORY_QUERY)["repositoriesOrError"]["nodes"]
    (repository,) = [
        r for r in repositories if any(s["name"].endswith("_schedule") for s in r["schedules"])
    ]
    schedules = {s["name"]: s for s in repository["schedules"]}
    jobs = {j["name"] for j in repository["jobs"]}
    sensors = {s["name"] for s in repository["sensors"]}
    for campaign in load_config().campaigns:
        schedule = schedules[f"{campaign.key}_schedule"]
        assert schedule["cronSchedule"] == campaign.schedule.cron
        assert schedule["executionTimezone"] == campaign.schedule.timezone
        assert schedule["pipelineName"] == f"{campaign.key}_daily"
        refresh = schedules[f"{campaign.key}_conversations_schedule"]
        assert refresh["cronSchedule"] == campaign.follow_up.conversations_cron
        assert refresh["pipelineName"] == f"{campaign.key}_conversations"
        assert {
            f"{campaign.key}_daily",
            f"{campaign.key}_conversations",
            f"{campaign.key}_dry_run",
            f"{campaign.key}_preflight",
            f"{campaign.key}_retry_deferred",
        } <= jobs
        assert f"{campaign.key}_deferred_retry" in sensors
    assert {
        "outbound_run_failure_alert",
        "outbound_failure_rate_alert",
        "report_freshness",
    } <= sensors


def test_deliveries_column_schema(webserver: str) -> None:
    key = load_config().campaigns[0].key
    node = graphql(webserver, COLUMNS_QUERY, path=[key, "deliveries"])["assetNodeOrError"]
    assert node["__typename"] == "AssetNode"
    (entry,) = [e for e in node["metadataEntries"] if e["label"] == "dagster/column_schema"]
    columns = {c["name"]: c for c in entry["schema"]["columns"]}
    assert list(columns) == [c.name for c in deliveries.columns]
    for column in deliveries.columns:
        assert columns[column.name]["description"] == column.comment
    assert "sent_at" in columns["attribution_expires_at"]["description"]
    assert columns["campaign_key"]["constraints"]["nullable"] is False
