"""Every line a service logs is one JSON object a log shipper can read (xietong/logs.py)."""

from __future__ import annotations

import json
import logging
import logging.config
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from confluent_kafka import Producer

from xietong.kafka import KafkaClients
from xietong.logs import CORE_FIELDS, LIBRDKAFKA_LOGGER, LineFormatter, json_line, log_event
from xietong.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def formatted(record: logging.LogRecord, service: str = "sink") -> dict[str, object]:
    line = LineFormatter(service).format(record)
    assert "\n" not in line
    parsed: dict[str, object] = json.loads(line)
    return parsed


def captured(logger: logging.Logger) -> list[logging.LogRecord]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return records


def test_an_event_is_one_line_with_the_core_fields_first_then_its_own() -> None:
    logger = logging.getLogger("connectors.test_logs")
    records = captured(logger)
    log_event(logger, "batch_published", connector="hz-amr", uscc="91330100MA2B3C4D5E", rows=3)
    [record] = records
    line = formatted(record)
    assert list(line)[: len(CORE_FIELDS)] == list(CORE_FIELDS)
    assert line["level"] == "INFO" and line["logger"] == "connectors.test_logs"
    assert line["service"] == "sink" and line["message"] == line["event"] == "batch_published"
    assert (line["connector"], line["uscc"], line["rows"]) == ("hz-amr", "91330100MA2B3C4D5E", 3)
    assert str(line["time"]).endswith("+00:00")


def test_a_field_named_like_a_core_one_does_not_replace_it() -> None:
    logger = logging.getLogger("connectors.test_logs_clash")
    records = captured(logger)
    log_event(logger, "answered", message="签收", level=2, logger="x")
    line = formatted(records[0])
    assert line["message"] == "answered" and line["message_"] == "签收"  # not escaped
    assert line["level"] == "INFO" and line["level_"] == 2 and line["logger_"] == "x"


def test_an_exception_is_one_line_with_its_traceback_in_a_field() -> None:
    logger = logging.getLogger("streams.test_logs")
    records = captured(logger)
    try:
        {}["missing"]
    except KeyError:
        logger.exception("could not read %s", "the table")
    line = formatted(records[0])
    assert line["level"] == "ERROR" and line["message"] == "could not read the table"
    assert "Traceback (most recent call last)" in str(line["traceback"])
    assert "KeyError: 'missing'" in str(line["traceback"])


def test_the_supervisors_line_in_a_service_log_is_a_line_like_the_services() -> None:
    line = json.loads(json_line("webhooks", "service_starting", args=["webhooks", "run"]))
    assert line["service"] == "webhooks" and line["args"] == ["webhooks", "run"]
    assert set(CORE_FIELDS) <= set(line)


def test_every_client_sends_librdkafkas_lines_through_pythons_logging() -> None:
    logger = KafkaClients(Settings(kafka_port=1), "sink")._common()["logger"]
    assert logger.name == LIBRDKAFKA_LOGGER
    records = captured(logger)
    # nothing listens on port 1: librdkafka says so, through the logger
    producer = Producer({"bootstrap.servers": "127.0.0.1:1", "logger": logger})
    deadline = time.monotonic() + 20
    while not records and time.monotonic() < deadline:
        producer.poll(0.2)
    assert records, "librdkafka logged nothing through Python's logging"
    assert set(CORE_FIELDS) <= set(formatted(records[0]))


PROCESS = textwrap.dedent(
    """
    import logging, logging.config, threading, warnings
    from xietong.logs import configure, dict_config, log_event

    configure(service="{configure}")
    if "{dict_config}":  # as Faust's worker and uvicorn configure logging
        logging.config.dictConfig(dict_config("INFO"))
    log_event(logging.getLogger("streams.x"), "started", partitions=[0, 1])
    logging.getLogger("aiokafka.consumer").warning("Heartbeat failed for group %s", "g")
    logging.getLogger("uvicorn.error").info("Uvicorn running on http://127.0.0.1:1")
    logging.getLogger("faust").info("[^Worker]: Ready")
    warnings.warn("a deprecated call")
    thread = threading.Thread(target=lambda: 1 / 0, name="poller")
    thread.start()
    thread.join()
    from xietong.settings import Settings
    Settings(kafka_port="not a port")
    """
)


def test_a_process_writes_only_json_lines_even_for_libraries_warnings_and_crashes() -> None:
    for dict_config in ("", "yes"):
        done = subprocess.run(
            [sys.executable, "-c", PROCESS.format(configure="probe", dict_config=dict_config)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert done.returncode != 0 and not done.stdout
        lines = [json.loads(line) for line in done.stderr.splitlines()]
        loggers = {line["logger"] for line in lines}
        libraries = {"aiokafka.consumer", "uvicorn.error", "faust", "py.warnings"}
        assert {"streams.x", *libraries} <= loggers
        assert all(line["service"] == "probe" for line in lines)
        crashes = [line for line in lines if line["level"] == "CRITICAL"]
        assert [crash.get("thread") for crash in crashes] == ["poller", None]
        assert "ValidationError" in str(crashes[-1]["traceback"])
