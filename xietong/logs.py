"""Structured logs: one JSON line per significant event, for every service.

    from xietong.logs import log_event
    log_event(logger, "batch_published", connector="hz-amr", event_id=..., uscc=...)

Each line carries ``event`` and a UTC ``at``, then the fields given — by convention the
``event_id`` and ``uscc`` of the record concerned, so a record can be followed across
connectors, processors and the sink with one grep. :func:`configure` sends the
platform's loggers to standard error as plain lines (the JSON is the message).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any


def log_event(logger: logging.Logger, event: str, **fields: Any) -> None:
    """Log one significant event as a JSON line at INFO."""
    if logger.isEnabledFor(logging.INFO):
        line = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event}
        logger.info(json.dumps({**line, **fields}, ensure_ascii=False, default=str))


def configure(level: int = logging.INFO) -> None:
    """Print the platform's event lines on standard error (idempotent)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("xietong", "connectors", "registry", "streams", "schemas"):
        platform_logger = logging.getLogger(name)
        if not platform_logger.handlers:
            platform_logger.addHandler(handler)
        platform_logger.setLevel(level)
        platform_logger.propagate = False
