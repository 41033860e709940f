"""The console in a real headless Chromium: log in, watch a wiped drive fail, upload and download a file.

Each step takes a screenshot (kept under the test's tmp_path) and checks it is a real picture of the page.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import pytest
from console_support import CONSOLE, check_screenshot

if not os.environ.get("CI"):  # a test dependency: in CI its absence fails the import instead
    pytest.importorskip("selenium", reason="selenium not installed (pip install -e '.[test]')")
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY, ServerProcess


def _shoot(driver, tmp_path: Path, name: str) -> Path:
    """A checked screenshot; with ``APOLLO_DOCS_SCREENSHOTS=DIR`` also kept there (docs/img is made so)."""
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot {name}"
    width, height = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    check_screenshot(path, width, height)
    if keep := os.environ.get("APOLLO_DOCS_SCREENSHOTS"):
        shutil.copyfile(path, Path(keep) / f"console-{name.split('-', 1)[1]}.png")
    return path


def _follow(driver, by: str, value: str) -> None:
    """Click a link or submit button and wait for the next page: a click returns before it loads."""
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(by, value).click()
    WebDriverWait(driver, 30).until(lambda _: _gone(old))


def _gone(element) -> bool:
    """Whether the page that held ``element`` is gone. Chrome asked mid-navigation may answer that the node
    "does not belong to the document" instead of calling it stale (selenium's ``staleness_of`` raises then)."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" not in str(exc):
            raise
        return True
    return False


def _wait(condition, timeout_s: float, what: str, step=lambda: None, seen=lambda: ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        step()
        if result := condition():
            return result
        time.sleep(0.5)
    raise AssertionError(f"{what} not seen within {timeout_s} s; last seen: {seen()}")


def _drive_state(driver, path: Path) -> str:
    for row in driver.find_elements(By.CSS_SELECTOR, "table tbody tr"):
        cells = row.find_elements(By.TAG_NAME, "td")
        if len(cells) > 2 and cells[1].text == str(path):
            return cells[2].text
    return ""


def test_console_in_a_browser(tmp_path: Path, browser):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with ServerProcess(tmp_path / "server") as server:
        # Not logged in: the console sends the browser to its login form.
        browser.get(server.endpoint + CONSOLE + "/")
        assert "/login" in browser.current_url
        _shoot(browser, shots, "1-login")

        # A wrong secret: one message, no detail; then the right pair lands on the overview.
        browser.find_element(By.ID, "access_key").send_keys(DEV_ACCESS_KEY)
        browser.find_element(By.ID, "secret_key").send_keys("wrong")
        _follow(browser, By.ID, "login")
        assert browser.find_element(By.ID, "login-error").text == "Access key or secret key is wrong."
        _shoot(browser, shots, "2-wrong-password")
        browser.find_element(By.ID, "access_key").send_keys(DEV_ACCESS_KEY)
        browser.find_element(By.ID, "secret_key").send_keys(DEV_SECRET_KEY)
        _follow(browser, By.ID, "login")
        assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"
        assert browser.find_element(By.ID, "scheme").text == "4+2"
        assert all(_drive_state(browser, drive) == "online" for drive in server.drives)
        _shoot(browser, shots, "3-overview")

        # Upload through the form, into a bucket made with S3, and see it listed. Its shards land on every drive,
        # so the drive wiped next holds data (an empty failed drive is retired at once) and cannot be rebuilt:
        # 4+2 on the five drives left has no spare, so it stays failed.
        bucket = f"console-{uuid.uuid4().hex[:8]}"
        server.s3().create_bucket(Bucket=bucket)
        _follow(browser, By.ID, "nav-buckets")
        _follow(browser, By.LINK_TEXT, bucket)
        data = bytes(range(256)) * 3000 + uuid.uuid4().bytes  # ~750 KB, not a round number
        source = tmp_path / "report.bin"
        source.write_bytes(data)
        browser.find_element(By.ID, "file").send_keys(str(source))
        _follow(browser, By.ID, "upload")
        assert "report.bin" in browser.find_element(By.ID, "uploaded").text
        _shoot(browser, shots, "4-uploaded")
        assert server.s3().get_object(Bucket=bucket, Key="report.bin")["Body"].read() == data

        # Wipe a drive: reload the overview until it shows the drive failed.
        _follow(browser, By.ID, "nav-overview")
        victim = server.drives[2]
        shutil.rmtree(victim)
        _wait(lambda: _drive_state(browser, victim) == "failed", 30, f"{victim} failed on the overview",
              step=browser.refresh, seen=lambda: browser.find_element(By.TAG_NAME, "main").text)  # fmt: skip
        assert browser.find_elements(By.CSS_SELECTOR, ".state-failed")
        assert any(str(victim) in step.text for step in browser.find_elements(By.CSS_SELECTOR, ".next-step"))
        _shoot(browser, shots, "5-drive-failed")

        # Download it back through the console: byte-exact, while a drive is failed (a degraded read).
        _follow(browser, By.ID, "nav-buckets")
        _follow(browser, By.LINK_TEXT, bucket)
        browser.find_element(By.CSS_SELECTOR, "a.download").click()
        target = browser.downloads / "report.bin"
        _wait(lambda: target.exists() and not list(browser.downloads.glob("*.crdownload")), 30, "the download")
        assert target.read_bytes() == data
        _shoot(browser, shots, "6-downloaded")

        # Log out: the overview asks for the login form again.
        _follow(browser, By.ID, "logout")
        browser.get(server.endpoint + CONSOLE + "/")
        assert "/login" in browser.current_url
    assert sorted(p.name for p in shots.iterdir()) == [
        "1-login.png", "2-wrong-password.png", "3-overview.png", "4-uploaded.png", "5-drive-failed.png",
        "6-downloaded.png",
    ]  # fmt: skip
