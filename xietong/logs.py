"""Logs: one JSON object a line, for every service and every library in it.

    from xietong.logs import log_event
    log_event(logger, "batch_published", connector="hz-amr", event_id=..., uscc=...)

Every line a service writes carries ``time`` (UTC, milliseconds), ``level``, ``logger``,
``service`` and ``message``; a significant event adds ``event`` and its fields — by
convention the ``event_id`` and ``uscc`` of the record concerned, so a record can be
followed across connectors, processors and the sink with one grep; an exception adds
its ``traceback`` as one field of the same line. python-json-logger formats and
serialises; :func:`configure` puts its formatter on the root logger, so Faust, mode,
aiokafka, uvicorn and librdkafka (through :data:`LIBRDKAFKA_LOGGER`, see
:func:`xietong.kafka.client_config`) write the same lines as the platform's own code.
Warnings and uncaught exceptions (of the main thread and of others) are logged too,
instead of a plain traceback on standard error.

The service is named by :func:`configure`'s argument, else ``XIETONG_SERVICE`` (which
``xietong run`` sets for each process it starts), else ``xietong``.
"""

from __future__ import annotations

import logging
import logging.config
import os
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from pythonjsonlogger.json import JsonFormatter

SERVICE_VARIABLE = "XIETONG_SERVICE"
LIBRDKAFKA_LOGGER = "librdkafka"
CORE_FIELDS = ("time", "level", "logger", "service", "message")
# Libraries that log every request at INFO (httpx's "HTTP Request: …", also under the
# schema registry client's "httpx2"): their warnings only.
QUIET_LIBRARIES = ("httpx", "httpx2", "httpcore")
PLATFORM_LOGGERS = ("xietong", "connectors", "registry", "streams", "schemas", "app")

_service: str | None = None


def service_name() -> str:
    """The name each line gives as ``service``."""
    return _service or os.environ.get(SERVICE_VARIABLE) or "xietong"


def log_event(logger: logging.Logger, event: str, /, **fields: Any) -> None:
    """Log one significant event at INFO: its name is the message and ``event``, its
    fields become fields of the line (a field named like a core one gets a ``_``)."""
    if logger.isEnabledFor(logging.INFO):
        logger.info(event, extra={"event": event, "event_fields": fields})


def log_warning(logger: logging.Logger, event: str, /, **fields: Any) -> None:
    """Log one event that needs an operator's eye, at WARNING (like :func:`log_event`)."""
    logger.warning(event, extra={"event": event, "event_fields": fields})


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields :func:`log_event` gave a record (empty for any other record)."""
    fields: dict[str, Any] = getattr(record, "event_fields", None) or {}
    return fields


class LineFormatter(JsonFormatter):
    """The platform's line: the core fields first, then the event's, then the traceback."""

    def __init__(self, service: str | None = None) -> None:
        super().__init__(json_ensure_ascii=False)
        self.service = service

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["service"] = self.service or service_name()
        log_data["message"] = record.message
        event = getattr(record, "event", None)
        if event is not None:
            log_data["event"] = event
        for key, value in event_fields(record).items():
            log_data[f"{key}_" if key in CORE_FIELDS or key == "event" else key] = value
        if "exc_info" in message_dict:
            log_data["traceback"] = message_dict["exc_info"]
        if "stack_info" in message_dict:
            log_data["stack"] = message_dict["stack_info"]


def json_line(service: str, event: str, **fields: Any) -> str:
    """One line as a service would log it, for a process writing into its log (the
    supervisor of ``xietong run``, before the service starts)."""
    record = logging.makeLogRecord(
        {"name": "xietong.run", "levelno": logging.INFO, "levelname": "INFO", "msg": event}
    )
    record.event, record.event_fields = event, fields
    return LineFormatter(service).format(record) + "\n"


def dict_config(level: int | str = logging.INFO) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` that writes every logger's records to standard
    error as the platform's JSON lines (for Faust's worker and for uvicorn, which
    configure logging themselves)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": LineFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's own loggers carry handlers of their own unless told otherwise
            **{
                name: {"handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
            **{name: {"level": "WARNING"} for name in QUIET_LIBRARIES},
        },
    }


def configure(level: int = logging.INFO, service: str | None = None) -> None:
    """Make every log line of this process a JSON line on standard error (idempotent).

    The formatter goes on the root logger, replacing any plain console handler there;
    the platform's loggers propagate to it, and so do every library's."""
    global _service
    if service:
        _service = service
    root = logging.getLogger()
    consoles = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler.stream in consoles:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in PLATFORM_LOGGERS:
        platform_logger = logging.getLogger(name)
        platform_logger.handlers.clear()
        platform_logger.setLevel(level)
        platform_logger.propagate = True
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    sys.unraisablehook = _log_unraisable


def _log_uncaught(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    logging.getLogger("xietong").critical("uncaught_exception", exc_info=(kind, error, trace))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    logging.getLogger("xietong").critical(
        "uncaught_exception_in_thread",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        extra={
            "event": "uncaught_exception",
            "event_fields": {"thread": getattr(args.thread, "name", None)},
        },
    )


def _log_unraisable(unraisable: Any) -> None:
    """An exception Python could not raise (in a finaliser, say): logged, not printed."""
    error = unraisable.exc_value
    logging.getLogger("xietong").error(
        "unraisable_exception",
        exc_info=(unraisable.exc_type, error, unraisable.exc_traceback) if error else None,
        extra={
            "event": "unraisable_exception",
            "event_fields": {"where": unraisable.err_msg or repr(unraisable.object)},
        },
    )
