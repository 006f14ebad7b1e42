"""
Headless Chromium, from Debian's packages, driven by Selenium: the
browser of the console tests.  Not a test module.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable, Optional, Sequence

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "screenshots")


def missing() -> Optional[str]:
    """What the browser tests lack on this machine, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return "%s is missing (apt-get install chromium chromium-driver)" % (path,)
    return None


def start(width: int = 1280, height: int = 900, flags: Sequence[str] = ()) -> Any:
    """A headless Chromium with its own empty profile, that reaches no network."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # The driver and browser are Debian's: Selenium Manager must fetch nothing.
    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="kaf-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-extensions",
                 "--user-data-dir=" + profile, "--window-size=%d,%d" % (width, height),
                 *flags):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.kaf_profile = profile
    return driver


def stop(driver: Any) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(driver.kaf_profile, ignore_errors=True)


def screenshot(driver: Any, name: str) -> str:
    os.makedirs(SCREENSHOTS, exist_ok=True)
    path = os.path.join(SCREENSHOTS, name + ".png")
    driver.save_screenshot(path)
    return path


def until(driver: Any, condition: Callable[[Any], Any], timeout: float = 10.0) -> Any:
    """What C{condition(driver)} gives once it is true, waited for by Selenium."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
