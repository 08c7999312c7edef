"""A real browser for the workbench's tests: Debian's ``chromium``, driven by its
``chromedriver`` through Selenium, headless, and nothing left running afterwards.

Selenium is pointed at ``/usr/bin/chromedriver`` and ``/usr/bin/chromium`` (``make system``
installs both as root), so Selenium Manager never looks for a driver to download: the
machines the suite runs on have no internet. The driver and the browser are processes of
this test session (``SE_*`` settings switch off Selenium's own telemetry too); at the end
the browser is quit, the driver stopped, and whatever of their process tree still runs
(chromium's renderers, its zygote) is stopped and waited for, so the session's leftover
check (``tests/conftest.py``) finds nothing::

    with chromium(tmp_path / "profile") as browser:
        browser.get("http://127.0.0.1:8440/signin")
        until(browser, lambda: browser.find_element(By.ID, "token"), 10, "the sign-in form")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from xietong.processes import stop_processes, wait_ended

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "apt-get install -y chromium chromium-driver (or make system, as root)"

Found = TypeVar("Found")


def require_chromium() -> None:
    """Skip the test when Debian's chromium or its driver is missing, saying how to add them."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: {INSTALL_HINT}")


@contextmanager
def chromium(
    profile: Path, width: int = 1280, height: int = 1400, offline: bool = False
) -> Iterator[Any]:
    """A headless chromium of its own profile, through chromedriver; everything it started
    is ended when the block ends. ``offline``: the browser reaches loopback only, as on an
    isolated government network (every other host goes through a proxy that is not there,
    and no name resolves)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    require_chromium()
    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--lang=zh-CN",
    ):
        options.add_argument(argument)
    closed = socket.socket()  # bound, never listening: a connection to it is refused at once
    if offline:
        closed.bind(("127.0.0.1", 0))
        # Chromium never sends loopback through a proxy (its implicit bypass rules).
        options.add_argument(f"--proxy-server=http://127.0.0.1:{closed.getsockname()[1]}")
        options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # chromium refuses to run as root with it
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(profile) + ".log")
    try:
        browser = webdriver.Chrome(service=service, options=options)
    except BaseException:
        closed.close()
        raise
    driver = psutil.Process(service.process.pid)
    try:
        yield browser
    finally:
        tree = [driver]
        with contextlib.suppress(psutil.Error):
            tree += driver.children(recursive=True)  # the browser and its helpers, now
        try:
            browser.quit()  # the browser first, then the driver (Service.stop)
        finally:
            stop_processes(wait_ended(tree, timeout=10), grace=5)
            shutil.rmtree(profile, ignore_errors=True)
            closed.close()


def until(
    browser: Any,
    look: Callable[[], Found | None],
    timeout: float,
    what: str,
    reload: bool = False,
) -> Found:
    """Until ``look()`` finds something (not None, not False, no exception), reloading the
    page between looks when ``reload``; fails after ``timeout`` seconds naming ``what`` and
    showing the page's text (``browser`` None: no page, a look at something else)."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    while True:
        try:
            found = look()
            if found is not None and found is not False:
                return found
        except WebDriverException:
            pass
        if time.monotonic() > deadline:
            page = "" if browser is None else browser.find_element("tag name", "body").text
            raise AssertionError(f"not within {timeout} s: {what}; the page reads:\n{page}")
        time.sleep(0.5)
        if reload and browser is not None:
            browser.refresh()
