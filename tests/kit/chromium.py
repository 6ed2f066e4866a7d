"""Headless Chromium driven over the DevTools protocol: how the page tests (the report, the run browser) load
a page, read facts from it with JavaScript, watch for console errors and requests, and take screenshots."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.kit.paths import REPO

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


class DevTools:
    def __init__(self, ws_url: str):
        import websocket  # websocket-client, installed with the kubernetes client

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.ids = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        self.ws.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.ids:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 30, what: str = "") -> Any:
        """Evaluate `expression` until it is truthy (the page polls, so facts arrive over time); return it."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what or expression} did not come true within {timeout} s")
            time.sleep(0.2)

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (e.g. a blocked load) seen so far."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in (
                "error",
                "assert",
                "warning",
            ):
                out.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                out.append(f"log: {params['entry']}")
        return out

    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def screenshot(self, name: str, *, selector: str | None = None, full_page: bool = True) -> bytes:
        """A PNG saved to test-artifacts/NAME and returned: of the element `selector` selects, of the whole
        page, or (full_page=False) of the window as it shows the top of the page (a fixed panel included)."""
        beyond = True
        if selector is not None:  # from the top, so that a sticky header stays at the top
            box = self.evaluate(
                f"(() => {{ scrollTo(0, 0); const b = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                " return {x: b.left + scrollX, y: b.top + scrollY, width: b.width, height: b.height}; })()"
            )
            clip = {**box, "scale": 1}
        elif full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        else:
            view = self.call("Page.getLayoutMetrics")["cssLayoutViewport"]
            clip = {"x": 0, "y": 0, "width": view["clientWidth"], "height": view["clientHeight"], "scale": 1}
            beyond = False
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=beyond, clip=clip)
        png = base64.b64decode(shot["data"])
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / name).write_bytes(png)
        return png


@contextmanager
def chromium(profile: Path, window: str = "1280,1000") -> Iterator[DevTools]:
    """A headless Chromium with one page, driven over DevTools; skips the test where Chromium is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip("headless Chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    pytest.importorskip(
        "websocket", reason="websocket-client is needed to drive Chromium's DevTools protocol"
    )
    proc = subprocess.Popen(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            f"--window-size={window}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
            assert proc.poll() is None, "chromium exited at start"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        yield tools
        tools.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
