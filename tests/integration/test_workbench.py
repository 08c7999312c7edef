"""The clerk's workbench in a real browser (Debian's chromium through chromedriver, headless),
against the real stack: a 双告知 and a 联合惩戒 worker, the credit sink and ``xietong
workbench serve`` each run as a process of their own, and the registration reaches them through the
registration department's file connector, as it would in the province.

西湖区交通运输局's clerk signs in with the department's registry token, sees the push of a
road-freight 设立 in the inbox, opens it (the registration, the permit it needs), claims
it, and watches the page until the processor has made it CLAIMED; a push of another
department (西湖区烟草专卖局) is not found for that clerk. 西湖区财政局's clerk answers a
restriction hit (a procurement matter of an entity on the serious list) with 反馈 and sees
it applied. Screenshots for a person to look
at are kept in ``.local/screenshots/`` (the paths are printed).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from app.samples import DepartmentExport, SampleRecord, write_export
from connectors.config import ConnectorConfig
from connectors.runner import run_connector
from connectors.sink import db as credit_db
from registry import service
from registry.audit import Actor
from registry.db import session_factory, transaction
from streams.joint_punishment.rules import restriction_hit_id
from tests.browser import chromium, require_chromium, until
from tests.dual_notice_records import registration
from tests.joint_punishment_records import list_entry, matter, today
from tests.monitoring import Command
from tests.stream_worker import (
    Onboarding,
    Platform,
    Watch,
    free_port,
    publish_catalog,
    running,
    sink_starts_at_the_end,
    start_where_the_tests_start,
)
from xietong import topics
from xietong.clock import business_clock
from xietong.kafka import KafkaClients
from xietong.settings import Settings
from xietong.uscc import make_uscc

pytestmark = pytest.mark.usefixtures("secured")

REPO = Path(__file__).parents[2]
REGISTRATION_CONNECTOR = REPO / "connectors" / "departments" / "hz-amr-registration.connector.yaml"
TRANSPORT = "hz-xh-transport"  # 西湖区交通运输局: approves 道路货物运输经营许可 in 330106
TOBACCO = "hz-xh-tobacco"  # 西湖区烟草专卖局: approves 烟草专卖零售许可 in 330106
FINANCE = "hz-xh-finance"  # 西湖区财政局: implements CJ01 (政府采购) and answers its hits
ROAD_FREIGHT = "道路货物运输（不含危险货物）"
#: How long the way from a connector to the page may take: worker, sink, a page load.
ARRIVAL_SECONDS = 60.0


# -- the services -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def credit_database(stack_settings: Settings) -> Iterator[str]:
    """A fresh, migrated credit database of this module's own; dropped at the end."""
    server = sa.make_url(stack_settings.credit_database_url)
    name = f"credit_test_{uuid.uuid4().hex[:12]}"
    url = server.set(database=name).render_as_string(hide_password=False)
    credit_db.create_database(url)
    credit_db.migrate(url)
    yield url
    maintenance = sa.create_engine(
        server.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
    )
    with maintenance.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    maintenance.dispose()


@pytest.fixture(scope="module")
def registry_url(
    registry_databases: Callable[[], str], stack_settings: Settings, kafka: KafkaClients
) -> str:
    """A registry database with the sample province, published to the registry's topics."""
    url = registry_databases()
    publish_catalog(url, stack_settings, kafka)
    return url


@pytest.fixture(scope="module")
def tokens(registry_url: str) -> dict[str, str]:
    """The departments' registry tokens, as an administrator issues them."""
    with transaction(session_factory(registry_url)) as session:
        admin = Actor.admin("test-workbench")
        return {
            code: service.issue_token(session, admin, code).token for code in (TRANSPORT, FINANCE)
        }


@pytest.fixture(scope="module")
def departments(kafka: KafkaClients, stack_settings: Settings) -> Iterator[Onboarding]:
    onboarding = Onboarding(kafka, stack_settings)
    for code in (TRANSPORT, TOBACCO, FINANCE):
        onboarding.onboard(code)
    yield onboarding
    onboarding.offboard_all()


@pytest.fixture(scope="module")
def workbench(
    registry_url: str,
    credit_database: str,
    departments: Onboarding,
    kafka: KafkaClients,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A 双告知 and a 联合惩戒 worker, the sink into the module's credit database and the
    workbench, each a process of its own; the workbench's address."""
    require_chromium()  # before anything starts: without a browser there is no test
    logs = tmp_path_factory.mktemp("workbench")
    port, sink_port = free_port(), free_port()
    started: list[Command] = []
    processors = ("dual-notice", "joint-punishment")
    start_where_the_tests_start(kafka, *processors)
    sink_starts_at_the_end(kafka, credit_database)
    with ExitStack() as workers:
        for processor in processors:
            workers.enter_context(running(processor, logs / f"{processor}.log"))
        try:
            sink = Command(
                logs / "sink.log",
                "sink",
                "run",
                CREDIT_DATABASE_URL=credit_database,
                XIETONG_SINK_METRICS_PORT=str(sink_port),
                XIETONG_SINK_TOPIC_REFRESH_INTERVAL="1",
                XIETONG_SINK_BATCH_WAIT="0.1",
            )
            started.append(sink)
            served = Command(
                logs / "workbench.log",
                "workbench",
                "serve",
                "--port",
                str(port),
                DATABASE_URL=registry_url,
                CREDIT_DATABASE_URL=credit_database,
            )
            started.append(served)
            sink.wait_for(f"http://127.0.0.1:{sink_port}/metrics")
            served.wait_for(f"http://127.0.0.1:{port}/ready")
            yield f"http://127.0.0.1:{port}"
        finally:
            for command in reversed(started):
                command.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "chromium-profile") as opened:
        yield opened


@pytest.fixture(scope="module")
def screenshots(stack_settings: Settings) -> Path:
    folder = stack_settings.home / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- what the province sends ----------------------------------------------------------------


def through_the_connector(record: dict[str, Any], kafka: KafkaClients, folder: Path) -> None:
    """``record`` as a row of 杭州市市场监管's GB18030 export, read by its file connector."""
    export = DepartmentExport.load(REGISTRATION_CONNECTOR)
    record_id = uuid.uuid4().hex
    version = business_clock().now().strftime("%Y-%m-%d %H:%M:%S")
    row = export.render(record, record_id, version)
    path = folder / export.file_name
    write_export(path, export, [SampleRecord(export.name, "registration", record_id, record, row)])
    config = yaml.safe_load(REGISTRATION_CONNECTOR.read_text(encoding="utf-8"))
    config["name"] = f"test-workbench-{record_id[:8]}"
    config["mapping"] = str(REGISTRATION_CONNECTOR.parent / config["mapping"])
    config["source"]["path"] = str(path)
    connector_file = folder / "connector.yaml"
    connector_file.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    report = run_connector(ConnectorConfig.load(connector_file), kafka)
    assert (report.read, report.published) == (1, 1), report


def pushed(kafka: KafkaClients, uscc: str, send: Callable[[], None]) -> dict[str, Any]:
    """The push ``send`` makes for the entity ``uscc``, as the worker first published it (an
    overdue one may have its OVERDUE version beside it already)."""
    pushes = Watch(kafka, topics.DUAL_NOTICE_PUSHES.name, uscc)
    send()
    first, *_ = pushes.until(lambda found: len(found) >= 1, timeout=ARRIVAL_SECONDS)
    return first


def sign_in(browser: Any, workbench: str, token: str, operator: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{workbench}/signin")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "operator").send_keys(operator)
    browser.find_element(By.ID, "signin").click()
    until(browser, lambda: browser.find_element(By.ID, "items"), 15, "the inbox after sign-in")


def state_on_page(browser: Any) -> str | None:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, "state").get_attribute("data-state")


# -- the clerk ------------------------------------------------------------------------------


def test_a_clerk_signs_in_sees_a_push_from_the_connector_claims_it_and_sees_it_claimed(
    workbench: str,
    browser: Any,
    tokens: dict[str, str],
    kafka: KafkaClients,
    connectors_kafka: KafkaClients,
    departments: Onboarding,
    tmp_path: Path,
    screenshots: Path,
) -> None:
    """The push of a road-freight 设立 in 西湖区, published through the registration
    department's connector, is in 西湖区交通运输局's inbox with its deadline; its page shows
    the registration and the permit it needs; 认领 makes it CLAIMED (by the processor), with
    the clerk's action APPLIED; an overdue push of the same department is shown in red."""
    from selenium.webdriver.common.by import By

    record = registration(
        "330106", (ROAD_FREIGHT,), industry="G5431", uscc=make_uscc("91", "330106")
    )
    push = pushed(
        kafka, record["uscc"], lambda: through_the_connector(record, connectors_kafka, tmp_path)
    )
    late = registration(
        "330106",
        (ROAD_FREIGHT,),
        industry="G5431",
        uscc=make_uscc("91", "330106"),
        event_time_ms=business_clock().now_ms() - int(timedelta(days=20).total_seconds() * 1000),
    )
    overdue = pushed(kafka, late["uscc"], lambda: Platform(kafka, departments).register(late))

    sign_in(browser, workbench, tokens[TRANSPORT], "王芳")
    row = until(
        browser,
        lambda: browser.find_element(By.ID, f"item-{push['push_id']}"),
        ARRIVAL_SECONDS,
        f"push {push['push_id']} in the inbox",
        reload=True,
    )
    assert "道路货物运输经营许可" in row.text and "待认领" in row.text
    late_row = until(
        browser,
        lambda: browser.find_element(By.ID, f"item-{overdue['push_id']}"),
        ARRIVAL_SECONDS,
        f"overdue push {overdue['push_id']} in the inbox",
        reload=True,
    )
    assert "overdue" in late_row.get_attribute("class")
    assert late_row.value_of_css_property("color") == "rgba(200, 30, 30, 1)"  # red
    assert "已逾期" in late_row.text
    assert browser.find_element(By.ID, "department").text.startswith("杭州市西湖区交通运输局")
    inbox_shot = screenshots / "workbench.png"
    assert browser.save_screenshot(str(inbox_shot))

    row.find_element(By.TAG_NAME, "a").click()
    until(browser, lambda: browser.find_element(By.ID, "registration"), 15, "the push's page")
    assert record["name"] in browser.find_element(By.ID, "registration").text
    assert ROAD_FREIGHT in browser.find_element(By.ID, "registration").text
    needed = browser.find_element(By.ID, "needed-item").text
    assert "道路货物运输经营许可" in needed and "《中华人民共和国道路运输条例》" in needed
    browser.find_element(By.ID, "claim").click()

    until(
        browser,
        lambda: state_on_page(browser) == "CLAIMED",
        ARRIVAL_SECONDS,
        "the push CLAIMED by the processor",
        reload=True,
    )
    until(
        browser,
        lambda: browser.find_element(By.ID, "outcome").get_attribute("data-state") == "APPLIED",
        ARRIVAL_SECONDS,
        "the claim APPLIED",
        reload=True,
    )
    assert browser.find_elements(By.ID, "claim") == []  # a claimed push is claimed no more
    browser.save_screenshot(str(screenshots / "workbench-claimed.png"))
    print(f"screenshots: {inbox_shot}, {screenshots / 'workbench-claimed.png'}")


def test_another_departments_push_is_not_found_for_the_clerk(
    workbench: str,
    browser: Any,
    tokens: dict[str, str],
    kafka: KafkaClients,
    departments: Onboarding,
    credit_database: str,
) -> None:
    """西湖区烟草专卖局's push, in the credit database, is 404 for 西湖区交通运输局's clerk,
    and its form cannot be reached."""
    from selenium.webdriver.common.by import By

    record = registration(
        "330106", ("烟草制品零售",), industry="F5227", uscc=make_uscc("91", "330106")
    )
    theirs = pushed(kafka, record["uscc"], lambda: Platform(kafka, departments).register(record))
    assert theirs["department"]["code"] == TOBACCO
    stored = sa.create_engine(credit_database, poolclass=sa.NullPool)
    until(
        None,
        lambda: (
            stored.connect()
            .execute(
                sa.text("SELECT 1 FROM deliveries WHERE subject_id = :id"),
                {"id": theirs["push_id"]},
            )
            .first()
        ),
        ARRIVAL_SECONDS,
        "the tobacco push delivered to its inbox, in the credit database",
    )
    stored.dispose()

    sign_in(browser, workbench, tokens[TRANSPORT], "王芳")
    browser.get(f"{workbench}/items/{theirs['push_id']}")

    assert browser.find_element(By.TAG_NAME, "h1").text == "未找到"
    assert browser.find_elements(By.ID, "claim") == []
    assert browser.find_element(By.ID, "error").get_attribute("data-field") == "item_id"


def test_a_return_for_other_reasons_without_saying_which_is_refused_naming_the_field(
    workbench: str,
    browser: Any,
    tokens: dict[str, str],
    kafka: KafkaClients,
    departments: Onboarding,
) -> None:
    """退回 with 其他 and no 说明 is answered on a page that names ``reason_text``; nothing is
    sent, and the push still waits for its claim."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    record = registration(
        "330106", (ROAD_FREIGHT,), industry="G5431", uscc=make_uscc("91", "330106")
    )
    push = pushed(kafka, record["uscc"], lambda: Platform(kafka, departments).register(record))
    sign_in(browser, workbench, tokens[TRANSPORT], "王芳")
    until(
        browser,
        lambda: browser.find_element(By.ID, f"item-{push['push_id']}"),
        ARRIVAL_SECONDS,
        f"push {push['push_id']} in the inbox",
        reload=True,
    ).find_element(By.TAG_NAME, "a").click()

    Select(browser.find_element(By.ID, "return-reason")).select_by_value("OTHER")
    browser.find_element(By.ID, "return").click()

    error = until(browser, lambda: browser.find_element(By.ID, "error"), 15, "the refusal")
    assert error.get_attribute("data-field") == "reason_text"
    assert "reason_text" in error.text
    browser.get(f"{workbench}/items/{push['push_id']}")
    assert state_on_page(browser) == "PUSHED"


def test_a_clerk_answers_a_restriction_hit_seeing_its_measure_and_legal_basis(
    workbench: str,
    browser: Any,
    tokens: dict[str, str],
    kafka: KafkaClients,
    departments: Onboarding,
    screenshots: Path,
) -> None:
    """An entity on 严重违法失信名单 in a procurement of 西湖区财政局 is a hit in its inbox; its
    page shows the measure CJ01 with its legal basis and the matter; 反馈 已实施限制 is
    applied by the processor, and the hit reads 已实施限制."""
    from selenium.webdriver.common.by import By

    listed = make_uscc("91", "330106")
    platform = Platform(kafka, departments)
    platform.list(list_entry(listed, f"E-{listed}", listed_on=today() - timedelta(days=10)))
    reference = f"ZJCG-{listed[-6:]}"
    hits = Watch(kafka, topics.PUNISHMENT_RESTRICTION_HITS.name, listed)
    platform.matter(
        matter(
            listed, FINANCE, "GOVERNMENT_PROCUREMENT", reference, matter_date=today() - timedelta(1)
        )
    )
    hits.until(bool, timeout=ARRIVAL_SECONDS)
    hit_id = restriction_hit_id(listed, FINANCE, "GOVERNMENT_PROCUREMENT", reference, "CJ01")

    sign_in(browser, workbench, tokens[FINANCE], "赵敏")
    row = until(
        browser,
        lambda: browser.find_element(By.ID, f"item-{hit_id}"),
        ARRIVAL_SECONDS,
        f"hit {hit_id} in the inbox",
        reload=True,
    )
    assert "限制命中" in row.text and "待反馈" in row.text
    row.find_element(By.TAG_NAME, "a").click()
    measure = until(browser, lambda: browser.find_element(By.ID, "measure"), 15, "the hit's page")
    assert "依法限制作为供应商参加政府采购活动" in measure.text
    assert (
        "《中华人民共和国政府采购法》第二十二条" in browser.find_element(By.ID, "legal-basis").text
    )
    assert reference in browser.find_element(By.ID, "matter").text
    assert "政府采购" in browser.find_element(By.ID, "matter").text
    browser.find_element(By.ID, "feedback").click()  # 已实施限制 is the form's choice

    until(
        browser,
        lambda: state_on_page(browser) == "APPLIED",
        ARRIVAL_SECONDS,
        "the hit fed back APPLIED",
        reload=True,
    )
    until(
        browser,
        lambda: browser.find_element(By.ID, "outcome").get_attribute("data-state") == "APPLIED",
        ARRIVAL_SECONDS,
        "the feedback APPLIED",
        reload=True,
    )
    assert "已实施限制" in browser.find_element(By.ID, "state").text
    browser.save_screenshot(str(screenshots / "workbench-hit.png"))
