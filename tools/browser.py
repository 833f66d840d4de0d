"""Headless Chromium, driven by Selenium through Debian's chromedriver.

    with browser.chromium() as driver:
        driver.get("http://127.0.0.1:8080/")

Installed by `.ci/install_chromium` (apt-get: chromium, chromium-driver).
Selenium is given the driver's path, so it never looks for a driver on
the network.
"""

import contextlib
import shutil

DRIVERS = ("/usr/bin/chromedriver", "chromedriver")
BROWSERS = ("/usr/bin/chromium", "chromium", "chromium-browser")


def _which(candidates):
    return next((path for path in map(shutil.which, candidates) if path), None)


def available():
    """Whether Chromium and its driver are installed."""
    return bool(_which(DRIVERS) and _which(BROWSERS))


@contextlib.contextmanager
def chromium(width=1200, height=900):
    """A headless Chromium session, quit on leaving."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not available():
        raise RuntimeError(
            "Chromium and chromedriver are not installed: run "
            ".ci/install_chromium (Debian: apt-get install chromium "
            "chromium-driver)."
        )
    options = webdriver.ChromeOptions()
    options.binary_location = _which(BROWSERS)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(_which(DRIVERS)))
    try:
        yield driver
    finally:
        driver.quit()
