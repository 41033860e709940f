"""Console fixtures: one real server per module (each test makes its own buckets)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from apollo.testing.server import ServerProcess


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("console")) as process:
        yield process


CHROMIUM_PACKAGES = ["chromium", "chromium-driver"]  # Debian's browser and its WebDriver


def _browser_binaries() -> tuple[str, str] | None:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="session")
def chromium_binaries() -> tuple[str, str]:
    """(chromium, chromedriver): Debian's packages, installed here when missing and running as root.

    In CI (``CI=true``) a browser that cannot be had fails the run, so the console's browser tests
    cannot silently stop running; elsewhere they are skipped with the reason.
    """
    found = _browser_binaries()
    if found is None and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *CHROMIUM_PACKAGES], check=False, env=env,
                       capture_output=True)  # fmt: skip
        found = _browser_binaries()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"chromium and chromedriver are missing in CI: apt-get install {' '.join(CHROMIUM_PACKAGES)}")
        pytest.skip(f"chromium and chromedriver not installed (apt-get install {' '.join(CHROMIUM_PACKAGES)})")
    return found


@pytest.fixture
def browser(chromium_binaries: tuple[str, str], tmp_path: Path) -> Iterator:
    """A headless Chromium under Selenium, downloading into ``tmp_path / "downloads"`` without asking."""
    if os.environ.get("CI"):
        from selenium import webdriver  # a test dependency: missing in CI is a failure, not a skip
    else:
        webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_binaries[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,900", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})  # fmt: skip
    # The Debian driver, named: Selenium would otherwise try to download a driver of its own.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromium_binaries[1]))
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()
