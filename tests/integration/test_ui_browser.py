"""The web UI end to end in headless Chromium: create, validate, filter, page, edit, delete, details, live."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from services.api.app import create_app
from services.api.keys import BUS
from shared.migrate import upgrade

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
ROWS = "#worklists tbody tr"

# One event loop for the module, so that one browser serves every test (starting one takes over a second).
pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    ),
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the browser tests exercise the page, the listing tests cover both stores."""
    url = f"sqlite:///{tmp_path / 'worklists.db'}"
    upgrade(url)
    return url


@pytest_asyncio.fixture(loop_scope="module")
async def base_url(settings_factory: Any) -> AsyncIterator[str]:
    """The real API application on a free loopback port, once connected to NATS (live updates subscribed)."""
    app = create_app(settings_factory())
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


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser, base_url: str) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1360, "height": 860}, base_url=base_url)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if _unexpected(msg) else None)
    yield page
    await context.close()
    assert errors == [], f"the page reported errors: {errors}"


_HANDLED = re.compile(r"Failed to load resource: the server responded with a status of 4\d\d")


def _unexpected(message: ConsoleMessage) -> bool:
    """Console errors fail a test, except Chromium's notes on 4xx answers, which the page handles."""
    return message.type == "error" and not _HANDLED.match(message.text)


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def rest(base_url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """A change made elsewhere: through the REST API, not the page."""
    async with aiohttp.ClientSession(base_url) as session, session.request(method, path, json=body) as resp:
        assert resp.status < 300, await resp.text()
        return await resp.json()


def tags(
    name: str, pid: str, accession: str, modality: str = "CT", station: str = "CT01", **more: Any
) -> dict[str, Any]:
    return {
        "Tags": {
            "PatientName": name,
            "PatientID": pid,
            "AccessionNumber": accession,
            "RequestedProcedureDescription": f"{modality} exam",
            "ScheduledProcedureStepSequence": [
                {
                    "Modality": modality,
                    "ScheduledStationAETitle": station,
                    "ScheduledProcedureStepStartDate": more.pop("date", "20251014"),
                    "ScheduledProcedureStepStartTime": more.pop("time", "093000"),
                    "ScheduledProcedureStepStatus": "SCHEDULED",
                }
            ],
            **more,
        }
    }


async def open_ui(page: Page) -> None:
    await page.goto("/ui/")
    await expect(page.locator("#live")).to_have_attribute("data-state", "live")
    await expect(page.locator("#range")).not_to_have_text("Loading…")


async def test_create_a_worklist_through_the_form(page: Page, base_url: str) -> None:
    await open_ui(page)
    await expect(page.locator("#empty")).to_be_visible()

    await page.get_by_role("button", name="New worklist").click()
    dialog = page.get_by_role("dialog", name="New worklist")
    await expect(dialog).to_be_visible()
    await page.fill("#f-PatientName", "DOE^JANE")
    await page.fill("#f-PatientID", "PID-1001")
    await page.fill("#f-PatientBirthDate", "1970-05-17")
    await page.select_option("#f-PatientSex", "F")
    await page.fill("#f-AccessionNumber", "ACC-1001")
    await page.select_option("#f-Modality", "CT")
    await page.fill("#f-ScheduledProcedureStepStartDate", "2025-10-14")
    await page.fill("#f-ScheduledProcedureStepStartTime", "09:30")
    await page.fill("#f-ScheduledStationAETitle", "CT01")
    await page.fill("#f-RequestedProcedureDescription", "CT chest without contrast")
    await page.fill("#f-ScheduledPerformingPhysicianName", "HOUSE^GREGORY")
    await screenshot(page, "create-form")
    await dialog.get_by_role("button", name="Create worklist").click()

    await expect(dialog).to_be_hidden()
    row = page.locator(ROWS, has_text="DOE, JANE")
    await expect(row).to_contain_text("PID-1001")
    await expect(row).to_contain_text("ACC-1001")
    await expect(row).to_contain_text("2025-10-14 09:30")
    await expect(row).to_contain_text("CT chest without contrast")
    await expect(page.locator("#notice")).to_have_text("Worklist created.")
    await screenshot(page, "created")

    [stored] = await rest(base_url, "GET", "/worklists")
    assert stored["Tags"]["PatientBirthDate"] == "19700517"
    assert stored["Tags"]["PatientSex"] == "F"
    assert stored["Tags"]["ScheduledProcedureStepSequence"] == [
        {
            "Modality": "CT",
            "ScheduledPerformingPhysicianName": "HOUSE^GREGORY",
            "ScheduledProcedureStepStartDate": "20251014",
            "ScheduledProcedureStepStartTime": "093000",
            "ScheduledStationAETitle": "CT01",
        }
    ]


async def test_validation_messages_appear_next_to_the_fields(page: Page, base_url: str) -> None:
    await open_ui(page)
    await page.get_by_role("button", name="New worklist").click()
    dialog = page.get_by_role("dialog", name="New worklist")

    # Client side: required fields, before any request.
    await dialog.get_by_role("button", name="Create worklist").click()
    await expect(page.locator("#e-PatientName")).to_have_text("Enter the patient's name.")
    await expect(page.locator("#e-Modality")).to_have_text("Choose a modality.")
    await expect(page.locator("#f-PatientName")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#f-PatientName")).to_be_focused()
    await page.fill("#f-ScheduledStationAETitle", "STATION-NAME-TOO-LONG")
    await dialog.get_by_role("button", name="Create worklist").click()
    await expect(page.locator("#e-ScheduledStationAETitle")).to_have_text("At most 16 characters.")
    await screenshot(page, "validation-client")
    assert await rest(base_url, "GET", "/worklists") == []

    # Server side: a rule only the API checks (PS3.5 PN structure), shown next to its field.
    await page.fill("#f-PatientName", "ONE^TWO^THREE^FOUR^FIVE^SIX")
    await page.fill("#f-PatientID", "PID-2")
    await page.select_option("#f-Modality", "MR")
    await page.fill("#f-ScheduledProcedureStepStartDate", "2025-10-15")
    await page.fill("#f-ScheduledStationAETitle", "MR01")
    await dialog.get_by_role("button", name="Create worklist").click()
    await expect(page.locator("#e-PatientName")).to_contain_text("more than 5 components")
    await expect(page.locator("#e-ScheduledStationAETitle")).to_have_text("")
    await expect(page.locator("#f-PatientName")).to_be_focused()
    await screenshot(page, "validation-server")

    await page.fill("#f-PatientName", "ONE^TWO")
    await expect(page.locator("#e-PatientName")).to_have_text("")  # a corrected field loses its message
    await dialog.get_by_role("button", name="Create worklist").click()
    await expect(page.locator(ROWS, has_text="ONE, TWO")).to_be_visible()


async def test_filter_and_page_through_the_table(page: Page, base_url: str) -> None:
    for i in range(30):
        modality, station = ("MR", "MR01") if i % 3 == 0 else ("CT", "CT02")
        date = f"202510{10 + i % 10:02d}"
        body = tags(f"PATIENT^NUMBER{i:02d}", f"P{i:02d}", f"A{i:02d}", modality, station, date=date)
        await rest(base_url, "POST", "/worklists/create", body)
    await open_ui(page)

    await expect(page.locator("#range")).to_have_text("1–25 of 30 worklists")
    await expect(page.locator(ROWS)).to_have_count(25)
    await expect(page.locator(ROWS).first).to_contain_text("NUMBER29")  # newest first
    await page.get_by_role("button", name="Next").click()
    await expect(page.locator("#range")).to_have_text("26–30 of 30 worklists")
    await expect(page.get_by_role("button", name="Next")).to_be_disabled()
    await page.get_by_role("button", name="Previous").click()
    await expect(page.locator("#range")).to_have_text("1–25 of 30 worklists")

    await page.get_by_label("Modality", exact=True).select_option("MR")
    await expect(page.locator("#range")).to_have_text("1–10 of 10 worklists")
    await expect(page.locator(ROWS).filter(has_text="CT02")).to_have_count(0)

    await page.get_by_label("Station AET").fill("CT*")
    await expect(page.locator("#empty")).to_be_visible()
    await page.get_by_label("Modality", exact=True).select_option("")
    await expect(page.locator("#range")).to_have_text("1–20 of 20 worklists")

    await page.get_by_label("Scheduled from").fill("2025-10-11")
    await page.get_by_label("to", exact=True).fill("2025-10-12")
    await expect(page.locator("#range")).to_have_text("1–4 of 4 worklists")  # days 11, 12 without MR
    await screenshot(page, "filtered")

    await page.get_by_role("button", name="Clear").click()
    await page.get_by_label("Search").fill("number07")
    await expect(page.locator(ROWS)).to_have_count(1)
    await expect(page.locator(ROWS)).to_contain_text("P07")
    assert "q=number07" in page.url  # filters survive a reload


async def test_edit_keeps_other_tags_and_delete_asks_first(page: Page, base_url: str) -> None:
    extra = {"RequestedProcedureID": "RP-9", "StudyInstanceUID": "1.2.3.4.5"}
    created = await rest(base_url, "POST", "/worklists/create", tags("ROE^RICHARD", "P-9", "ACC-9", **extra))
    await open_ui(page)

    row = page.locator(ROWS, has_text="ROE, RICHARD")
    await row.get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog", name="Edit worklist")
    await expect(page.locator("#f-AccessionNumber")).to_have_value("ACC-9")
    await expect(page.locator("#f-ScheduledProcedureStepStartTime")).to_have_value("09:30")
    await page.fill("#f-AccessionNumber", "ACC-10")
    await page.fill("#f-ScheduledProcedureStepStartTime", "14:15")
    await dialog.get_by_role("button", name="Save changes").click()
    await expect(row).to_contain_text("ACC-10")
    await expect(row).to_contain_text("2025-10-14 14:15")

    stored = (await rest(base_url, "GET", f"/worklists/{created['ID']}"))["Tags"]
    assert stored["AccessionNumber"] == "ACC-10"
    assert stored["RequestedProcedureID"] == "RP-9"
    assert stored["StudyInstanceUID"] == "1.2.3.4.5"
    assert stored["ScheduledProcedureStepSequence"][0]["ScheduledProcedureStepStatus"] == "SCHEDULED"

    await row.get_by_role("button", name="Delete").click()
    confirm = page.get_by_role("dialog", name="Delete worklist?")
    await expect(confirm).to_contain_text("ROE, RICHARD (accession ACC-10)")
    await screenshot(page, "delete-confirm")
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(row).to_be_visible()

    await row.get_by_role("button", name="Delete").click()
    await confirm.get_by_role("button", name="Delete").click()
    await expect(row).to_have_count(0)
    await expect(page.locator("#notice")).to_have_text("Worklist deleted.")
    assert await rest(base_url, "GET", "/worklists") == []


async def test_details_show_every_tag(page: Page, base_url: str) -> None:
    await rest(base_url, "POST", "/worklists/create", tags("DOE^JOHN", "P-5", "ACC-5", "US", "US01"))
    await open_ui(page)

    await page.locator(ROWS, has_text="DOE, JOHN").get_by_role("button", name="Details").click()
    details = page.get_by_role("dialog", name="DOE, JOHN")
    await expect(details).to_be_visible()
    table = details.locator("table.tags")
    for text in ("(0010,0010)", "PatientName", "DOE^JOHN", "(0040,0100)", "ScheduledProcedureStepSequence"):
        await expect(table).to_contain_text(text)
    for text in ("Item 1", "ScheduledStationAETitle", "US01", "SpecificCharacterSet", "StudyInstanceUID"):
        await expect(table).to_contain_text(text)
    await screenshot(page, "details")
    await details.get_by_role("button", name="Close").first.click()
    await expect(details).to_be_hidden()


async def test_changes_made_elsewhere_appear_without_reload(page: Page, base_url: str) -> None:
    await open_ui(page)
    await page.evaluate("window.notReloaded = true")
    within_a_second = 1000  # ms from the REST answer (the commit) to the row on screen

    created = await rest(base_url, "POST", "/worklists/create", tags("LIVE^LUCY", "P-L", "ACC-L"))
    row = page.locator(ROWS, has_text="LIVE, LUCY")
    await expect(row).to_be_visible(timeout=within_a_second)
    await expect(row).to_have_class("flash")  # the new row is pointed out
    await screenshot(page, "live-created")

    await rest(base_url, "PUT", f"/worklists/{created['ID']}", tags("LIVE^LUCY", "P-L", "ACC-LIVE-2"))
    await expect(row).to_contain_text("ACC-LIVE-2", timeout=within_a_second)
    await rest(base_url, "DELETE", f"/worklists/{created['ID']}")
    await expect(row).to_have_count(0, timeout=within_a_second)
    assert await page.evaluate("window.notReloaded") is True
