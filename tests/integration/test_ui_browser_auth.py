"""The web UI behind REST authentication, in headless Chromium: the browser's login is sent with the page's
own requests and its event stream; a read-only user sees the list but cannot change it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, HttpCredentials, Page, async_playwright, expect
from playwright.async_api import Error as PlaywrightError

from services.api.app import create_app
from services.api.keys import BUS
from shared.migrate import upgrade
from tests.integration.test_ui_browser import CHROMIUM, CHROMIUM_ARGS, ROWS, tags

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    ),
    pytest.mark.asyncio(loop_scope="module"),
]

USERS = {"alice": "alice-password", "bob": {"Password": "bob-password", "Role": "read-only"}}
ALICE: HttpCredentials = {"username": "alice", "password": "alice-password"}
BOB: HttpCredentials = {"username": "bob", "password": "bob-password"}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'worklists.db'}"
    upgrade(url)
    return url


@pytest_asyncio.fixture(loop_scope="module")
async def base_url(settings_factory: Any) -> AsyncIterator[str]:
    app = create_app(settings_factory(AuthenticationEnabled=True, RegisteredUsers=USERS))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    await asyncio.wait_for(app[BUS].connected.wait(), 10)
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def as_user(browser: Browser, base_url: str, login: HttpCredentials | None) -> Page:
    """A page whose browser answers the server's Basic challenge with `login`, as a user typing it would."""
    context = await browser.new_context(base_url=base_url, http_credentials=login)
    return await context.new_page()


async def rest(base_url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    auth = aiohttp.encode_basic_auth(ALICE["username"], ALICE["password"])
    async with (
        aiohttp.ClientSession(base_url, headers={"Authorization": auth}) as session,
        session.request(method, path, json=body) as resp,
    ):
        assert resp.status < 300, await resp.text()
        return await resp.json()


async def test_without_a_valid_login_the_page_is_not_served(browser: Browser, base_url: str) -> None:
    page = await as_user(browser, base_url, None)
    # Headless, nobody answers the login prompt: Chromium gives up on the challenge.
    with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
        await page.goto("/ui/")
    await page.context.close()
    page = await as_user(browser, base_url, {"username": "alice", "password": "guess"})
    response = await page.goto("/ui/")
    assert response is not None and response.status == 401
    assert "app.js" not in await page.content()
    await page.context.close()


async def test_a_logged_in_user_works_live(browser: Browser, base_url: str) -> None:
    page = await as_user(browser, base_url, ALICE)
    await page.goto("/ui/")
    await expect(page.locator("#live")).to_have_attribute("data-state", "live")  # the stream, logged in

    # A change made elsewhere appears through the event stream.
    await rest(base_url, "POST", "/worklists/create", tags("ELSEWHERE^EVA", "PID-A1", "ACC-A1"))
    await expect(page.locator(ROWS, has_text="ELSEWHERE, EVA")).to_be_visible()

    # The page's own writes carry the login too.
    await page.get_by_role("button", name="New worklist").click()
    dialog = page.get_by_role("dialog", name="New worklist")
    await page.fill("#f-PatientName", "FORM^FRED")
    await page.fill("#f-PatientID", "PID-A2")
    await page.select_option("#f-Modality", "CT")
    await page.fill("#f-ScheduledProcedureStepStartDate", "2025-10-14")
    await dialog.get_by_role("button", name="Create worklist").click()
    await expect(page.locator("#notice")).to_have_text("Worklist created.")
    await expect(page.locator(ROWS, has_text="FORM, FRED")).to_be_visible()
    await page.context.close()


async def test_a_read_only_user_sees_but_cannot_change(browser: Browser, base_url: str) -> None:
    await rest(base_url, "POST", "/worklists/create", tags("READONLY^RITA", "PID-B1", "ACC-B1"))
    page = await as_user(browser, base_url, BOB)
    await page.goto("/ui/")
    await expect(page.locator("#live")).to_have_attribute("data-state", "live")
    await expect(page.locator(ROWS, has_text="READONLY, RITA")).to_be_visible()

    await page.get_by_role("button", name="New worklist").click()
    dialog = page.get_by_role("dialog", name="New worklist")
    await page.fill("#f-PatientName", "NEVER^NED")
    await page.fill("#f-PatientID", "PID-B2")
    await page.select_option("#f-Modality", "MR")
    await page.fill("#f-ScheduledProcedureStepStartDate", "2025-10-14")
    await dialog.get_by_role("button", name="Create worklist").click()
    await expect(dialog.get_by_role("alert")).to_have_text("bob has the read-only role")
    listed = await rest(base_url, "GET", "/worklists?PatientID=PID-B2")
    assert listed == []
    await page.context.close()
