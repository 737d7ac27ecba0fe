"""The Dagster UI as its users use it, in a real browser (Debian's chromium, driven by
Playwright) against `dagster dev` on the code location: the lineage, a backfill launched from
the UI, the checks and the automation. On failure, a screenshot of the page goes to
.test-output/<test name>.png."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from fraud_assets.definitions import build_definitions
from fraud_assets.settings import AssetSettings
from fraud_devtools.dagster_ui import LocalDagsterDev
from fraud_devtools.processes import wait_until
from tests.conftest import FAILED, SMALL_WORLD

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--headless=new", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
"""As root, without a sandbox; and without the background connections this closed network
refuses."""
OUTPUT = Path(__file__).resolve().parents[2] / ".test-output"


@pytest.fixture(scope="module")
def dagster_ui(
    tmp_path_factory: pytest.TempPathFactory, landing: Path
) -> Iterator[LocalDagsterDev]:
    folder = tmp_path_factory.mktemp("dagster-ui")
    env = {
        "FRAUD_ASSETS_DATA_DIR": str(folder / "data"),
        "FRAUD_ASSETS_LANDING_DIR": str(landing),
        "FRAUD_ASSETS_START_DATE": SMALL_WORLD.start.isoformat(),
    }
    server = LocalDagsterDev(folder, env)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(request: pytest.FixtureRequest, browser, dagster_ui: LocalDagsterDev) -> Iterator[object]:  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=dagster_ui.url, viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    # Dagster greets a new browser with a newsletter dialog over the page: dismiss it
    # whenever it shows up.
    page.add_locator_handler(
        page.get_by_text("Join the Dagster community"),
        lambda: page.get_by_role("button", name="Skip").click(),
    )
    yield page
    if request.node.stash.get(FAILED, False):
        OUTPUT.mkdir(exist_ok=True)
        shot = OUTPUT / f"{request.node.name}.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the page: {shot}")
    context.close()


def group_edges() -> tuple[set[str], set[tuple[str, str]]]:
    """The groups of the asset graph, and which group feeds which."""
    graph = build_definitions(AssetSettings()).resolve_asset_graph()
    groups, edges = set(), set()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        groups.add(node.group_name)
        for parent in node.parent_keys:
            upstream = graph.get(parent).group_name
            if upstream != node.group_name:
                edges.add((upstream, node.group_name))
    return groups, edges


def test_the_lineage_shows_every_group_and_the_edges_between_them(page) -> None:  # type: ignore[no-untyped-def]
    groups, edges = group_edges()
    page.goto("/asset-groups")
    graph = page.locator("svg[class*=svgContainer]")
    for group in groups:
        graph.locator(f"foreignObject.group [data-tooltip='{group}']").wait_for()
    drawn = graph.locator('path[stroke="var(--color-lineage-edge)"]')
    wait_until(lambda: drawn.count() == len(edges), f"{len(edges)} edges drawn", 20)


def test_a_backfill_of_two_days_launched_from_the_ui_completes(page, dagster_ui) -> None:  # type: ignore[no-untyped-def]
    first = SMALL_WORLD.start
    second = first + dt.timedelta(days=1)
    page.goto("/assets/raw_transactions")
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Show all partitions").click()
    selection = dialog.get_by_role("textbox").first
    selection.fill(f"[{first}...{second}]")
    selection.press("Enter")
    dialog.get_by_text("2 partitions", exact=True).first.wait_for()
    dialog.get_by_role("button", name="Launch backfill").click()
    created = page.get_by_text(re.compile(r"Created backfill \w+"))
    match = re.search(r"Created backfill (\w+)", created.inner_text())
    assert match is not None

    page.goto(f"/runs/b/{match.group(1)}")  # the backfill's page refreshes itself
    page.get_by_text("100% completed").wait_for(timeout=240_000)
    # "Succeeded" heads a column of the partition table, and is the status badge once done.
    succeeded = page.get_by_text("Succeeded", exact=True)
    wait_until(lambda: succeeded.count() == 2, "the backfill's status: Succeeded", 60)
    warehouse = Path(dagster_ui.env["FRAUD_ASSETS_DATA_DIR"]) / "warehouse" / "raw_transactions"
    assert sorted(p.name for p in warehouse.iterdir()) == [f"day={first}", f"day={second}"]
    page.goto("/assets/raw_transactions?view=partitions")
    page.get_by_text("Materialized (2)", exact=True).wait_for()


def test_checks_and_automation_are_visible(page) -> None:  # type: ignore[no-untyped-def]
    page.goto("/assets/fraud_model?view=checks")
    page.get_by_text("fraud_model_quality").first.wait_for()
    page.get_by_text("blocking").first.wait_for()
    page.goto("/assets/onnx_model?view=checks")
    page.get_by_text("onnx_matches_native").first.wait_for()
    page.get_by_text("onnx_single_row_latency").first.wait_for()
    page.goto("/automation")
    for name in ("nightly_scoring_schedule", "weekly_retraining_schedule",
                 "new_labelled_days_sensor"):  # fmt: skip
        page.get_by_text(name, exact=True).wait_for()
    page.get_by_text("At 02:00 AM UTC").first.wait_for()
