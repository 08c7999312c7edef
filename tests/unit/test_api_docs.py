"""Every service's interactive API docs work on a machine without internet (issue 14 §5).

A government network has no route to a CDN: each service's ``/docs`` (Swagger UI) and
``/redoc`` (ReDoc) page must reference only the service's own URLs, and the service must
serve every script, stylesheet and icon the page names. The apps are built as their
processes build them, over fakes that are never called (no request here reaches Kafka
or a database).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.workbench.settings import WorkbenchSettings
from app.workbench.web import create_app as workbench_app
from connectors.config import ConnectorConfig
from connectors.http_ingest import create_app as http_ingest_app
from connectors.inbox.api import create_app as inbox_app
from connectors.inbox.settings import InboxSettings
from registry.api import create_app as registry_app
from streams.credit_check.api import create_app as credit_check_app
from streams.credit_check.settings import CreditCheckSettings
from streams.credit_check.state import CreditCheckTopics, CreditState
from xietong.clock import business_clock
from xietong.kafka import KafkaClients
from xietong.settings import Settings

FIXTURES = Path(__file__).parents[1] / "fixtures"
HZ_HEALTH = "11330100EUHUXQEE4F"  # 杭州市卫生健康委员会, the department of the fixture mapping
NOWHERE = "postgresql+psycopg2://nobody@127.0.0.1:1/nothing"  # never connected to here


class Directory:
    """The registry as the HTTP ingest asks it at startup: which departments exist."""

    def departments_by_uscc(self) -> dict[str, str]:
        return {HZ_HEALTH: "hz-health"}


def http_ingest(tmp_path: Path) -> FastAPI:
    connector = {
        "name": "docs-test",
        "source": {"kind": "http", "mappings": [str(FIXTURES / "hz-health-licence.yaml")]},
    }
    path = tmp_path / "connector.yaml"
    path.write_text(yaml.safe_dump(connector, allow_unicode=True), encoding="utf-8")
    config = ConnectorConfig.load(path)
    return http_ingest_app(config, KafkaClients(Settings()), Directory())  # type: ignore[arg-type]


def credit_check() -> FastAPI:
    clock = business_clock()
    state = CreditState(KafkaClients(Settings()), CreditCheckTopics(), clock)
    state.ready = threading.Event()
    return credit_check_app(state, None, None, CreditCheckSettings(), clock)  # type: ignore[arg-type]


def inbox() -> FastAPI:
    return inbox_app(None, None, None, InboxSettings(), business_clock())  # type: ignore[arg-type]


SERVICES = {
    # service → (how its app is built, its docs page, its ReDoc page)
    "registry": (lambda _: registry_app(NOWHERE, None), "/docs", "/redoc"),
    "inbox API": (lambda _: inbox(), "/v1/docs", "/v1/redoc"),
    "HTTP ingest": (http_ingest, "/docs", "/redoc"),
    "credit check": (lambda _: credit_check(), "/docs", "/redoc"),
}


class References(HTMLParser):
    """The URLs a page makes the browser load: scripts, stylesheets, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for attribute in ("src", "href"):
            if named.get(attribute) and tag in {"script", "link", "img"}:
                self.urls.append(named[attribute] or "")


def references(page: str) -> list[str]:
    parser = References()
    parser.feed(page)
    return parser.urls


@pytest.fixture(params=sorted(SERVICES))
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[TestClient, Any]]:
    build, docs, redoc = SERVICES[request.param]
    # No lifespan (no `with`): nothing is started, the pages are only rendered.
    yield TestClient(build(tmp_path)), (docs, redoc)


def test_each_docs_page_names_only_the_services_own_assets_and_each_is_served(
    service: tuple[TestClient, tuple[str, str]],
) -> None:
    client, pages = service
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        outside = re.findall(r"https?://[^\"' )]+", response.text)
        assert not outside, f"{page} names URLs outside the service: {outside}"
        urls = references(response.text)
        assert any(url.endswith(".js") for url in urls), urls
        for url in urls:
            assert url.startswith("/"), url
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert asset.content, url


def test_swagger_ui_reads_the_services_own_openapi_document_and_no_online_validator(
    service: tuple[TestClient, tuple[str, str]],
) -> None:
    client, (docs, _) = service
    page = client.get(docs).text
    openapi_url = client.app.openapi_url  # type: ignore[attr-defined]
    assert f"url: '{openapi_url}'" in page
    assert client.get(openapi_url).json()["paths"]
    assert '"validatorUrl": null' in page


def test_the_workbench_offers_no_api_docs_and_names_no_cdn() -> None:
    client = TestClient(workbench_app(None, WorkbenchSettings(), business_clock()))  # type: ignore[arg-type]
    for page in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(page).status_code in (303, 307, 404), page
    sign_in = client.get("/signin")
    assert sign_in.status_code == 200
    assert not re.search(r"https?://", sign_in.text)
