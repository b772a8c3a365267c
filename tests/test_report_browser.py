"""Open built reports (fine-tuning, and one with the dynamics section) in headless Chromium: every image decodes
and every table is on the page.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``).
Without them the test is skipped, except under CI (env var ``CI`` set), where their absence fails it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dynascope.report.build import ReportConfig, ReportResult, build_report
from dynascope.runio import STUDY

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def _require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return
    message = f"headless-browser test needs {' and '.join(missing)} (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI is set, so a missing browser is a failure")
    pytest.skip(message)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tmp_path / "chromium-profile"
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _check_page(browser: WebDriver, result: ReportResult) -> None:
    """Open the report: every image decodes, every table and figure is shown, nothing is fetched from outside."""
    from selenium.webdriver.common.by import By

    browser.get(result.html_path.resolve().as_uri())
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) == len(result.figures)
    widths = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]);"
    )
    assert all(complete and w > 0 and h > 0 for complete, w, h in widths), widths
    for name in result.tables:
        table = browser.find_element(By.ID, f"table-{name}")
        assert table.is_displayed()
        assert len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) > 0
    for name in result.figures:
        assert browser.find_element(By.ID, f"fig-{name}").is_displayed()
    external = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'));"
    )
    assert external == []


def test_report_renders_in_headless_chromium(
    browser: WebDriver,
    tmp_path: Path,
    finetune_run_factory: Callable[..., Path],
    ntk_run_factory: Callable[..., Path],
) -> None:
    root = tmp_path / "runs"
    for method in ("ft", "lp-ft"):
        for seed in (0, 1):
            finetune_run_factory(root / f"toy-{method}-{seed}", method=method, seed=seed)
    ntk_run_factory(root / "ntk-toy")
    result = build_report([root], tmp_path / "report", ReportConfig(tsne_max_points=30))
    assert result.figures and result.tables
    _check_page(browser, result)
    # The image probe can fail: an undecodable PNG reports naturalWidth 0.
    browser.get("data:text/html,<img src='data:image/png;base64,AAAA'>")
    assert browser.execute_script("return document.images[0].naturalWidth;") == 0


def test_dynamics_report_renders_in_headless_chromium(
    browser: WebDriver,
    tmp_path: Path,
    finetune_run_factory: Callable[..., Path],
    looped_run_factory: Callable[..., Path],
) -> None:
    from selenium.webdriver.common.by import By

    study = tmp_path / "study"
    looped_run_factory(study / "runs" / "itrsa_none", run="itrsa_none", norm="none")
    looped_run_factory(study / "runs" / "itrsa_rms", run="itrsa_rms", learning_curve=True)
    STUDY.write(study, "results", "# results\n")
    finetune_run_factory(tmp_path / "ft", pieces=())
    result = build_report([study, tmp_path / "ft"], tmp_path / "report", ReportConfig(tsne=False))
    dynamics = [name for name in result.figures if name.startswith("dynamics-")]
    assert len(dynamics) == 6
    _check_page(browser, result)
    section = browser.find_element(By.ID, "sec-dynamics")
    assert section.is_displayed() and section.find_element(By.TAG_NAME, "h2").text == "Dynamics"
    assert len(section.find_elements(By.TAG_NAME, "img")) == len(dynamics)
    assert browser.find_element(By.CSS_SELECTOR, "nav a[href='#sec-dynamics']").is_displayed()
