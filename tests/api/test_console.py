"""The web console in a real headless Chromium (Selenium) against ``ferryman serve`` and the lab.

Screenshots of the run pages are kept in ``$TEST_ARTIFACTS_DIR`` (default ``tmp/artifacts`` in
the checkout) for whoever reads the test results.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.api.served import Served, served
from workflows.tokens import Role

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",
]
WAIT = 90.0


def artifacts() -> Path:
    """Where screenshots go (created)."""
    folder = Path(os.environ.get("TEST_ARTIFACTS_DIR") or ROOT / "tmp" / "artifacts") / "console"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path) as running:
        yield running


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    chromium = shutil.which("chromium")
    driver_binary = shutil.which("chromedriver")
    if chromium is None or driver_binary is None:
        pytest.fail("chromium and chromium-driver are not installed (apt-get install them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(driver_binary), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(browser: WebDriver, server: Served, role: Role) -> None:
    browser.delete_all_cookies()
    browser.get(f"{server.url}/login")
    browser.find_element(By.ID, "token").send_keys(server.tokens[role])
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, WAIT).until(
        lambda b: b.find_elements(By.ID, "principal")
        and b.find_element(By.ID, "principal").text == f"{role.value}-served"
    )


def status_is(browser: WebDriver, *statuses: str) -> bool:
    """Whether the run page shows one of ``statuses`` (the live script updates it)."""
    try:
        return browser.find_element(By.ID, "run-status").text in statuses
    except WebDriverException:  # the page is reloading
        return False


def test_operator_starts_approver_approves_in_the_browser_and_the_test_is_cleaned_up(
    server: Served, browser: WebDriver
) -> None:
    sign_in(browser, server, Role.OPERATOR)
    browser.find_element(By.LINK_TEXT, "Start a test failover").click()
    WebDriverWait(browser, WAIT).until(lambda b: b.find_elements(By.ID, "review"))
    browser.find_element(By.ID, "review").click()
    # a click submits the form; the confirmation is the next page, loaded when it is loaded
    WebDriverWait(browser, WAIT).until(lambda b: b.find_elements(By.ID, "confirmation"))
    confirmation = browser.find_element(By.ID, "confirmation").text
    assert "acts on 7 VMs" in confirmation
    assert browser.find_element(By.ID, "vm-list").text == (
        "sql-01, sql-02, app-01, app-02, app-03, web-01, web-02"
    )
    browser.find_element(By.ID, "confirm").click()
    WebDriverWait(browser, WAIT).until(lambda b: b.find_elements(By.ID, "run"))
    run_id = browser.find_element(By.ID, "run").get_attribute("data-run")
    assert run_id
    WebDriverWait(browser, WAIT).until(lambda b: status_is(b, "waiting"))
    WebDriverWait(browser, WAIT).until(lambda b: b.find_elements(By.ID, "gate"))
    assert browser.find_elements(By.ID, "approve") == []  # an operator cannot decide gates
    browser.save_screenshot(str(artifacts() / "run-waiting-operator.png"))

    sign_in(browser, server, Role.APPROVER)
    browser.get(f"{server.url}/runs/{run_id}")
    assert "confirm-databases" in browser.find_element(By.ID, "gate").text
    browser.find_element(By.ID, "comment").send_keys("availability group healthy")
    browser.find_element(By.ID, "approve").click()
    WebDriverWait(browser, WAIT).until(lambda b: status_is(b, "succeeded", "failed"))
    assert browser.find_element(By.ID, "run-status").text == "succeeded"
    WebDriverWait(browser, WAIT).until(
        lambda b: all(
            row.get_attribute("data-status") in ("succeeded", "approved")
            for row in b.find_elements(By.CSS_SELECTOR, ".gantt-row")
        )
    )
    approvals = browser.find_element(By.ID, "approvals").text
    assert "approved by approver-served (approver via token)" in approvals
    assert "availability group healthy" in approvals
    assert browser.find_elements(By.ID, "cleanup") == []  # an approver cannot clean up
    browser.save_screenshot(str(artifacts() / "run-succeeded.png"))
    assert len(server.test_vms()) == 7

    sign_in(browser, server, Role.OPERATOR)
    browser.get(f"{server.url}/runs/{run_id}")
    browser.find_element(By.ID, "cleanup").click()
    WebDriverWait(browser, WAIT).until(
        lambda b: b.find_elements(By.ID, "run")
        and b.find_element(By.ID, "run").get_attribute("data-run") != run_id
    )
    WebDriverWait(browser, WAIT).until(lambda b: status_is(b, "succeeded", "failed"))
    assert browser.find_element(By.ID, "run-status").text == "succeeded"
    browser.save_screenshot(str(artifacts() / "cleanup-succeeded.png"))
    assert server.test_vms() == []

    browser.get(f"{server.url}/runs/{run_id}/report")
    text = browser.find_element(By.TAG_NAME, "main").text
    assert "achieved: start to last VM up" in text and "cleanup" in text
    browser.save_screenshot(str(artifacts() / "report.png"))


def test_a_viewer_sees_no_approve_button_and_forged_decisions_get_403(
    server: Served, browser: WebDriver
) -> None:
    with server.client(Role.OPERATOR) as operator:
        started = operator.post("/api/v1/runs", json={"plan": "three-tier", "type": "test"})
        assert started.status_code == 201, started.text
    run_id = started.json()["id"]
    server.settle(run_id, "waiting")

    sign_in(browser, server, Role.VIEWER)
    browser.get(f"{server.url}/runs/{run_id}")
    assert browser.find_elements(By.ID, "approve") == []
    assert "cannot decide gates" in browser.find_element(By.ID, "no-decision").text
    browser.save_screenshot(str(artifacts() / "run-waiting-viewer.png"))
    # the viewer forges the approve form's request from the console's own page
    forged = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {method: "POST", credentials: "same-origin",
              headers: {"Content-Type": "application/x-www-form-urlencoded"},
              body: "comment=forged"}).then(r => done(r.status));
        """,
        f"/runs/{run_id}/gates/confirm-databases/approve",
    )
    assert forged == 403
    api_forged = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {method: "POST", credentials: "same-origin",
              headers: {"Content-Type": "application/json"},
              body: JSON.stringify({comment: "forged"})}).then(r => done(r.status));
        """,
        f"/api/v1/runs/{run_id}/gates/confirm-databases/approve",
    )
    assert api_forged == 403

    # an approver's cookie sent by a page on another origin is refused too
    cross_site = httpx.post(
        f"{server.url}/runs/{run_id}/gates/confirm-databases/approve",
        content="comment=forged",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": "http://attacker.example",
            "Cookie": f"ferryman_token={server.tokens[Role.APPROVER]}",
        },
    )
    assert cross_site.status_code == 403
    assert server.status(run_id) == "waiting"  # nothing was decided
    with server.client(Role.VIEWER) as viewer:
        report = viewer.get(f"/api/v1/runs/{run_id}").json()
    assert [a["status"] for a in report["approvals"]] == ["pending"]

    # end the run: a rejected test run is undone, leaving the lab clean
    with server.client(Role.APPROVER) as approver:
        rejected = approver.post(
            f"/api/v1/runs/{run_id}/gates/confirm-databases/reject", json={"comment": "done"}
        )
        assert rejected.status_code == 200, rejected.text
    server.settle(run_id, "compensated")
    assert server.test_vms() == []
