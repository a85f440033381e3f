"""The demo as a person uses it: the Dagster UI of `dagster dev` in headless Chromium.

The browser is Debian's `chromium` package driven by playwright (`make test` installs it as root);
nothing is downloaded. Screenshots go to the test's tmp folder, and also to SYNC_TEST_SCREENSHOTS
when that names a folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync_assets_tests.dagster_dev import demo_home, run_demo_command, running_dagster_dev, sync_every_table

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(
        f"chromium missing ({CHROMIUM}): install it with `sudo apt-get install chromium` "
        "(`make test` does so when run as root)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install -e '.[test]'")
expect = sync_api.expect

# The flags this machine's Chromium needs (playwright adds --headless and a fresh --user-data-dir).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ASSET = "jde/work_orders"
RUN_DEADLINE_MS = 300_000
# Each check's status as the Checks tab words it (assetCheckStatusDescription in the UI source).
CHECK_STATUS = re.compile(r"^(Succeeded|Failed|Not evaluated|In progress|Skipped)$")
# The icons of the "Latest check results" tags, as a person reads them.
CHECK_ICONS = {
    "check_circle": "passed",
    "warning_outline": "warning",
    "cancel": "failed",
    "dot": "not evaluated",
}
ASSET_CHECKS = """
query ($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks { name } } } }
  }
}
"""


@pytest.fixture
def demo_ui(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """`make demo`: every table's mass partition synced into a fresh DAGSTER_HOME, then `dagster dev`."""
    home = demo_home(tmp_path / "home")
    sync_every_table(home)
    with running_dagster_dev(home, tmp_path / "dagster_dev.log") as port:
        yield home, port


@pytest.fixture
def screenshots(tmp_path: Path) -> Iterator[Path]:
    """The test's screenshots, copied to SYNC_TEST_SCREENSHOTS afterwards (also after a failure)."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    yield folder
    copy_to = os.environ.get("SYNC_TEST_SCREENSHOTS")
    if copy_to:
        shutil.copytree(folder, copy_to, dirs_exist_ok=True)


@pytest.fixture
def page(demo_ui: tuple[Path, int]) -> Iterator[sync_api.Page]:
    _, port = demo_ui
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(
            base_url=f"http://127.0.0.1:{port}", viewport={"width": 1400, "height": 1000}
        )
        context.set_default_timeout(60_000)
        # Only the local UI: nothing is fetched from the internet.
        context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), lambda route: route.abort())
        # The "Join the Dagster community" dialog, as if dismissed before (its localStorage key).
        context.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
        try:
            yield context.new_page()
        finally:
            browser.close()


def _stat(page: sync_api.Page, label: str) -> sync_api.Locator:
    """A stat of the asset's Status section: the innermost block holding its heading."""
    return page.locator("div").filter(has=page.get_by_text(label, exact=True)).last


def _check_results(page: sync_api.Page) -> dict[str, int]:
    """The "Latest check results" tags: how many checks passed, warn, failed."""
    snapshot = _stat(page, "Latest check results").aria_snapshot()
    tags = re.findall(r'- img "(\w+)"\s*\n\s*- text: "?(\d+)"?', snapshot)
    return {CHECK_ICONS.get(icon, icon): int(count) for icon, count in tags}


def _checks_tab(page: sync_api.Page, expected: int) -> dict[str, tuple[str, str]]:
    """Each check of the Checks tab's list: its name -> (icon, status text)."""
    column = (
        page.locator("div")
        .filter(has=page.get_by_placeholder("Filter checks"))
        .filter(has=page.get_by_text(re.compile(r"^Checks \(\d+\)$")))
        .filter(has_not=page.get_by_role("tab", name="Execution history"))
    )
    expect(column.get_by_text(CHECK_STATUS)).to_have_count(expected)
    rows = re.findall(r'- img "(\w+)"\s*\n\s*- text: (.+)', column.aria_snapshot())
    checks = {}
    for icon, text in rows:
        # The row reads "<truncated name> <full name> <status>".
        found = re.search(r"(\S+) (Succeeded|Failed|Not evaluated|In progress|Skipped)$", text.strip('"'))
        if found:
            checks[found[1]] = (icon, found[2])
    return checks


def _graphql(port: int, query: str, variables: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["data"]


def test_a_daily_sync_from_the_ui_shows_the_new_rows_and_green_checks(demo_ui, page, screenshots):
    home, port = demo_ui
    cache = home / "sync_demo" / "cache.sqlite"
    check_names = {
        c["name"]
        for c in _graphql(port, ASSET_CHECKS, {"key": {"path": ASSET.split("/")}})["assetNodeOrError"][
            "assetChecksOrError"
        ]["checks"]
    }
    with sqlite3.connect(cache) as db:
        (before,) = db.execute("SELECT count(*) FROM work_orders").fetchone()
    # Source changes for the daily sync to pick up: work orders completed and new ones added.
    changed = run_demo_command(home, "sync_assets.demo", "changes")
    added = int(re.search(r"(\d+) inserted", changed)[1])

    page.goto(f"/assets/{ASSET}")
    expect(_stat(page, "Row count")).to_have_text(re.compile(rf"Row count\s*{before:,}$"))
    page.screenshot(path=screenshots / "1_asset_before.png")

    page.get_by_role("button", name="Materialize…").click()
    title = page.get_by_text(f"Launch runs to materialize {ASSET.replace('/', ' / ')}", exact=True)
    dialog = page.get_by_role("dialog").filter(has=title)
    dialog.get_by_text("Select a partition").click()
    daily = page.get_by_role("menuitem", name=re.compile(r"\bdaily\b"))
    daily.click()
    expect(daily.get_by_role("checkbox")).to_be_checked()
    title.click()  # closes the partition list, as a click beside it does
    expect(page.get_by_placeholder("Filter partitions")).to_be_hidden()
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    # The dialog warns when an upstream table of the same partitions lacks the partition; the
    # mass of `items` brought its daily up to date, so no warning once its health has loaded.
    page.wait_for_load_state("networkidle")
    expect(dialog.get_by_text("Upstream data missing")).to_have_count(0)
    page.screenshot(path=screenshots / "2_materialize_dialog.png")
    dialog.get_by_role("button", name="Launch 1 run").click()

    notifications = page.get_by_role("region", name=re.compile("Notifications"))
    expect(notifications.get_by_text(re.compile(r"^Launched run"))).to_be_visible()
    notifications.get_by_role("link", name="View", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = page.url.rsplit("/", 1)[-1].split("?")[0]
    expect(page.get_by_text("partition: daily")).to_be_visible()
    ended = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
    expect(ended).to_be_visible(timeout=RUN_DEADLINE_MS)
    page.screenshot(path=screenshots / "3_run.png")
    assert ended.inner_text() == "Success", f"run {run_id} ended {ended.inner_text()}"

    after = before + added
    page.goto(f"/assets/{ASSET}")
    expect(_stat(page, "Row count")).to_have_text(re.compile(rf"Row count\s*{after:,}$"))
    expect(
        _stat(page, "Latest materialization").get_by_role("link", name="daily", exact=True)
    ).to_be_visible()
    # The catalog's column descriptions, in the asset's Columns table.
    expect(page.get_by_text("Work order number (JDE DOCO)", exact=True)).to_be_visible()
    page.screenshot(path=screenshots / "4_asset_after.png")
    results = _check_results(page)

    page.get_by_role("tab", name="Checks").click()
    checks = _checks_tab(page, len(check_names))
    page.screenshot(path=screenshots / "5_checks_after.png")
    assert set(checks) == check_names, f"the Checks tab lists {sorted(checks)}"
    not_green = {name: shown for name, shown in checks.items() if shown != ("check_circle", "Succeeded")}
    assert not not_green, f"checks not green (icon, status): {not_green}"
    assert results == {"passed": len(check_names)}, f"Latest check results: {results}"

    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT count(*) FROM work_orders").fetchone() == (after,)
        last = db.execute(
            "SELECT table_name, update_type, mode, status, run_id FROM sync_log ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert last == ("work_orders", "daily", "incremental", "succeeded", run_id)
