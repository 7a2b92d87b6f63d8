"""The Cloud 66 connection form in a real browser: headless Chromium drives Airflow's own UI (an
api-server on 127.0.0.1), adds a connection through the form, and the saved connection must work
with the hook against the emulator. Run by ``make test-browser`` (Chromium from Debian's packages,
Playwright from PyPI); skipped elsewhere."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("C66_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = Path(os.environ.get("C66_BROWSER_ARTIFACTS", ROOT / "browser-check")) / "connection-form.png"
AIRFLOW = str(Path(sys.executable).parent / "airflow")

pytestmark = pytest.mark.skipif(
    os.environ.get("C66_BROWSER") != "1", reason="a real browser check: make test-browser runs it"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def airflow_env(tmp_path: Path) -> dict[str, str]:
    """A scratch Airflow of its own (SQLite), every user an admin (the simple auth manager)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow-home"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__API_AUTH__JWT_SECRET="browser-check-" + "x" * 32,
        C66_API_PORT=str(port),
    )
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return env


@pytest.fixture
def api_server(airflow_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = airflow_env["C66_API_PORT"]
    log = open(tmp_path / "api-server.log", "wb")  # noqa: SIM115 - the server keeps it
    server = subprocess.Popen(
        [AIRFLOW, "api-server", "-H", "127.0.0.1", "-p", port, "-w", "1"],
        env=airflow_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "api-server.log").read_text()[-3000:]) from None
                time.sleep(1)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()


def field(dialog: Any, label: str) -> Any:
    """The input of the form field labelled ``label``: the one inside the same field group (the UI
    does not always tie a label to its input with ``for``)."""
    group = dialog.get_by_role("group").filter(
        has=dialog.page.locator("label", has_text=re.compile(rf"^\s*{re.escape(label)}\s*\*?\s*$"))
    )
    assert group.count() == 1, f"one field labelled {label!r}, found {group.count()}"
    return group.locator("input")


def test_a_cloud66_connection_added_through_the_form_works_with_the_hook(
    cloud66_emulator_factory, airflow_env, api_server, tmp_path
):
    from playwright.sync_api import sync_playwright

    emu = cloud66_emulator_factory(conn_id=None)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(f"{api_server}/connections")  # Admin > Connections
            page.get_by_role("button", name="Add Connection").click()
            page.locator("input[name=connection_id]").fill("c66_from_form")
            page.get_by_role("combobox").fill("Cloud 66")
            page.get_by_role("option", name="Cloud 66", exact=True).click()
            dialog = page.get_by_role("dialog")
            field(dialog, "API URL").wait_for()

            # Exactly the fields the provider declares, each under its label; the hidden ones absent.
            labels = [" ".join(text.split()) for text in dialog.locator("label").all_text_contents()]
            assert labels == [
                "Connection ID *",
                "Connection Type *",
                "Description",
                "API URL",
                "Access token",
                "Account id",
                "Timeout",
            ], labels
            for hidden in ("login", "port", "schema"):
                assert dialog.locator(f"input[name={hidden}]").count() == 0, hidden

            # Standard fields (the section open first), then the declared extra fields (conn-fields).
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            api_url, token = field(dialog, "API URL"), field(dialog, "Access token")
            assert (api_url.get_attribute("name"), token.get_attribute("name")) == ("host", "password")
            assert api_url.get_attribute("placeholder") == "https://app.cloud66.com/api/3"
            assert token.get_attribute("type") == "password"
            api_url.fill(emu.base_url)
            token.fill(emu.token)
            page.screenshot(path=str(SCREENSHOT.with_name("connection-form-standard.png")), full_page=True)

            page.get_by_text("Extra Fields", exact=True).click()
            account, timeout = field(dialog, "Account id"), field(dialog, "Timeout")
            assert account.get_attribute("name") == "element_account_id"
            assert timeout.get_attribute("role") == "spinbutton"
            assert (timeout.get_attribute("aria-valuenow"), timeout.get_attribute("aria-valuemax")) == (
                "60",
                "3600",
            )
            account.fill("acc-7")
            timeout.fill("30")
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            page.get_by_role("button", name="Save").click()
            dialog.wait_for(state="hidden", timeout=30_000)
            page.get_by_role("cell", name="c66_from_form", exact=True).wait_for(timeout=30_000)  # listed
        finally:
            browser.close()

    # The saved connection as Airflow stored it (exported from its metadata database), then the hook
    # using exactly that connection against the emulator.
    exported = tmp_path / "connections.json"
    subprocess.run(
        [AIRFLOW, "connections", "export", str(exported), "--file-format", "json"],
        env=airflow_env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    stored = json.loads(exported.read_text())["c66_from_form"]
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from airflow_provider_c66.hooks.cloud66 import Cloud66Hook\n"
            "hook = Cloud66Hook('c66_from_form'); ok, message = hook.test_connection()\n"
            "conn = hook.get_connection('c66_from_form')\n"
            "print(json.dumps({'ok': ok, 'message': message, 'type': conn.conn_type, 'host': conn.host,"
            " 'extra': conn.extra_dejson, 'timeout': hook.settings.timeout}))",
        ],
        env={**airflow_env, "AIRFLOW_CONN_C66_FROM_FORM": json.dumps(stored)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    saved = json.loads(check.stdout.strip().splitlines()[-1])
    assert saved == {
        "ok": True,
        "message": saved["message"],
        "type": "cloud66",
        "host": emu.base_url,
        "extra": {"account_id": "acc-7", "timeout": 30},
        "timeout": 30.0,
    }
    assert saved["message"].startswith(f"Connected to Cloud 66 at {emu.base_url}")
    (ping,) = [r for r in emu.requests if r.path.endswith("/stacks.json")]
    assert ping.headers["X-Account"] == "acc-7"
    assert ping.headers["Authorization"] == f"Bearer {emu.token}"
