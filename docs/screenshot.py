"""Take docs/asset-graph.png (or another page) from a running Dagster UI with headless Chromium.

    DAGSTER_HOME=... dagster-webserver -m outbound_pipeline -h 127.0.0.1 -p 3311 &
    .venv/bin/python docs/screenshot.py http://127.0.0.1:3311 docs/asset-graph.png
    # the report's plots across the days of `DAYS=5 make demo`:
    SCREENSHOT_HEIGHT=3300 .venv/bin/python docs/screenshot.py http://127.0.0.1:3311 \
        docs/report-plots.png /assets/winter_offers/report Status,Description,Columns,Plots,Events

The fourth argument: the buttons to click, in order, separated by commas.

Drives Chromium over its DevTools protocol (the `websockets` package, already installed with
uvicorn) so that it can dismiss the UI's first-visit dialog and open every asset group before the
picture is taken. Only loopback addresses are used.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import websockets

GROUPS = ("warehouse", "order_ready", "winter_offers")
WIDTH = 1600
HEIGHT = int(os.environ.get("SCREENSHOT_HEIGHT", "1000"))  # a taller page shows more plots


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lineage_url(base: str) -> str:
    expanded = ",".join(
        [f"global@global:{g}" for g in GROUPS]
        + [f"__repository__@outbound_pipeline:{g}" for g in GROUPS]
    )
    return f"{base.rstrip('/')}/asset-groups?{urllib.parse.urlencode({'expanded': expanded})}"


# Clicks the button whose text is given, and scrolls the page to it.
_CLICK = """(() => {
  const button = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === %s);
  if (button) { button.click(); button.scrollIntoView({block: 'start'}); }
  return Boolean(button);
})()"""


async def _capture(
    ws_url: str, base: str, target: str, out: Path, settle: float, click: str | None = None
) -> None:
    counter = itertools.count(1)
    async with websockets.connect(ws_url, max_size=64 * 1024 * 1024) as ws:

        async def call(method: str, **params: object) -> dict:
            ident = next(counter)
            await ws.send(json.dumps({"id": ident, "method": method, "params": params}))
            while True:
                message = json.loads(await ws.recv())
                if message.get("id") == ident:
                    return message.get("result", {})

        await call("Page.enable")
        await call(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )
        await call("Page.navigate", url=base)
        await asyncio.sleep(3)
        # The UI's first-visit "join the community" dialog is remembered in localStorage.
        await call("Runtime.evaluate", expression="localStorage.setItem('communityNux', 'true')")
        await call("Page.navigate", url=target)
        await asyncio.sleep(settle)
        for text in click.split(",") if click else ():
            found = await call("Runtime.evaluate", expression=_CLICK % json.dumps(text))
            if not found.get("result", {}).get("value"):
                sys.exit(f"no button {text!r} on {target}")
            await asyncio.sleep(settle / 2)
        shot = await call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))


def main(
    base: str, out: str, settle: float = 10.0, page: str | None = None, click: str | None = None
) -> None:
    browser = (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )
    if not browser:
        sys.exit("no chromium on PATH (apt-get install -y chromium)")
    port = _free_port()
    profile = tempfile.mkdtemp(prefix="outbound-shot-")
    process = subprocess.Popen(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--remote-debugging-port={port}",
            "--remote-debugging-address=127.0.0.1",
            f"--window-size={WIDTH},{HEIGHT}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/json/list", timeout=2
                ) as response:
                    pages = [t for t in json.load(response) if t.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit("chromium did not open its DevTools port")
            time.sleep(0.3)
        asyncio.run(
            _capture(
                pages[0]["webSocketDebuggerUrl"],
                base,
                base.rstrip("/") + page if page else lineage_url(base),
                Path(out),
                settle,
                click,
            )
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(
        sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:3000",
        sys.argv[2] if len(sys.argv) > 2 else "docs/asset-graph.png",
        page=sys.argv[3] if len(sys.argv) > 3 else None,
        click=sys.argv[4] if len(sys.argv) > 4 else None,
    )
