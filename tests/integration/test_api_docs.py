"""The registry's API docs render in a real browser with the network closed (issue 14 §5).

``xietong registry serve`` runs as a process of its own, on a registry database of this
module's own; Debian's chromium (headless, through chromedriver) reaches loopback only,
as a browser on an isolated government network does: every other host goes to a proxy
that refuses, and no name resolves. Swagger UI at ``/docs`` shows the registry's
operations and ReDoc at ``/redoc`` its document, and every resource the pages loaded
came from the registry itself. Screenshots are kept in ``.local/screenshots/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import chromium, require_chromium, until
from tests.monitoring import Command
from tests.stream_worker import free_port
from xietong.settings import Settings

pytestmark = pytest.mark.usefixtures("secured")

#: What a page may take to load and render its document on this shared machine.
RENDER_SECONDS = 30.0


@pytest.fixture(scope="module")
def registry(registry_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``xietong registry serve`` on a free port; its address."""
    require_chromium()
    port = free_port()
    served = Command(
        tmp_path_factory.mktemp("registry") / "registry.log",
        "registry",
        "serve",
        DATABASE_URL=registry_url,
        XIETONG_REGISTRY_PORT=str(port),
    )
    try:
        served.wait_for(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        served.stop()


@pytest.fixture
def offline_browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "chromium-profile", offline=True) as opened:
        yield opened


def loaded_resources(browser: Any) -> list[str]:
    """Every URL the page has loaded or tried to load (the Resource Timing entries)."""
    return list(
        browser.execute_script(
            "return performance.getEntriesByType('resource').map(entry => entry.name)"
        )
    )


def test_swagger_ui_and_redoc_render_the_registry_api_from_the_registry_alone(
    registry: str, offline_browser: Any, stack_settings: Settings
) -> None:
    from selenium.webdriver.common.by import By

    browser = offline_browser
    operations = sum(
        len(methods) for methods in httpx.get(f"{registry}/openapi.json").json()["paths"].values()
    )
    shots = stack_settings.home / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)

    browser.get(f"{registry}/docs")
    # The network is closed indeed: a CDN the page might have named does not answer.
    refused = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css')"
        ".then(() => done('reached'), () => done('refused'));"
    )
    assert refused == "refused"
    shown = until(
        browser,
        lambda: len(browser.find_elements(By.CSS_SELECTOR, ".opblock")) or None,
        RENDER_SECONDS,
        "Swagger UI's operations",
    )
    assert shown == operations
    assert "Xietong registry" in browser.find_element(By.CSS_SELECTOR, ".info .title").text
    assert browser.save_screenshot(str(shots / "registry-docs-offline.png"))
    print(f"screenshot: {shots / 'registry-docs-offline.png'}")
    docs_resources = loaded_resources(browser)

    browser.get(f"{registry}/redoc")
    until(
        browser,
        lambda: browser.find_elements(By.CSS_SELECTOR, "[data-section-id^='tag/']") or None,
        RENDER_SECONDS,
        "ReDoc's sections",
    )
    assert "Xietong registry" in browser.find_element(By.TAG_NAME, "h1").text
    assert browser.save_screenshot(str(shots / "registry-redoc-offline.png"))

    resources = docs_resources + loaded_resources(browser)
    assert any(url.endswith("swagger-ui-bundle.js") for url in resources), resources
    assert any(url.endswith("redoc.standalone.js") for url in resources), resources
    outside = {url for url in resources if not url.startswith(f"{registry}/")}
    # Besides the probe above, only ReDoc's "API docs by Redocly" logo, built into its
    # bundle, is asked for elsewhere: refused, the image hides itself (nothing is blank).
    assert outside == {
        "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css",
        "https://cdn.redoc.ly/redoc/logo-mini.svg",
    }
