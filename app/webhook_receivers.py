"""The simulator's webhook departments: a few departments whose systems take their inbox
by webhook instead of reading Kafka, played by one HTTP server on loopback.

When the simulator starts, each of ``XIETONG_SIMULATOR_WEBHOOK_DEPARTMENTS`` gets an
endpoint ``http://127.0.0.1:<port>/hooks/<code>`` registered in the registry (plain
http: it is the local stack's own simulator), and keeps the secret the registry answers.
Every delivery is verified as a department's receiver would (Standard Webhooks, with
the spec's library), deduplicated by its ``webhook-id`` and answered 200; a bad
signature is answered 401. When the simulator stops, the endpoints are deleted again, so
the webhook worker does not retry an address nobody serves. Counted on
``xietong_simulator_webhooks_received_total{department,outcome}`` (``accepted``,
``repeat``, ``bad_signature``).

    receivers = WebhookReceivers(["hz-xh-amr"], database_url)
    receivers.open()        # serving, endpoints registered
    receivers.close()       # endpoints deleted, server stopped
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import Counter
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from xietong.logs import log_event
from xietong.settings import LOOPBACK

logger = logging.getLogger("app.simulator")

RECEIVED = Counter(
    "xietong_simulator_webhooks_received",
    "Webhook deliveries the simulated departments received, by department and outcome"
    " (accepted, repeat: a webhook-id seen before, bad_signature)",
    ("department", "outcome"),
)


class WebhookReceivers:
    """The simulated departments' webhook receivers (see the module's docstring)."""

    def __init__(self, departments: Sequence[str], database_url: str) -> None:
        self.departments = list(departments)
        self.database_url = database_url
        self._verifiers: dict[str, Webhook] = {}
        self._endpoints: list[int] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def open(self) -> None:
        """Serve, and register each department's endpoint (replacing one left behind)."""
        if not self.departments:
            return
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, name="simulator webhooks", daemon=True
        ).start()
        port = self._server.server_address[1]
        from registry.audit import Actor
        from registry.db import session_factory, transaction
        from registry.webhooks import delete_webhook, list_webhooks, register_webhook

        actor = Actor.system("simulator")
        with transaction(session_factory(self.database_url)) as session:
            for row in list_webhooks(session, actor):
                if row.department.code in self.departments:
                    delete_webhook(session, actor, row.id)  # an earlier run's, on its old port
            session.flush()
            for code in self.departments:
                url = f"http://{LOOPBACK}:{port}/hooks/{code}"
                made = register_webhook(session, actor, code, url, allow_http=True)
                self._verifiers[code] = Webhook(made.secret)
                self._endpoints.append(made.endpoint.id)
        log_event(logger, "simulator_webhooks_serving", port=port, departments=self.departments)

    def close(self) -> None:
        """Delete the endpoints registered by :meth:`open`; stop serving."""
        if self._endpoints:
            from registry.audit import Actor
            from registry.db import session_factory, transaction
            from registry.webhooks import delete_webhook

            actor = Actor.system("simulator")
            with transaction(session_factory(self.database_url)) as session:
                for endpoint_id in self._endpoints:
                    delete_webhook(session, actor, endpoint_id)
            self._endpoints.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def receive(self, department: str, body: bytes, headers: dict[str, str]) -> int:
        """One delivery: the status to answer."""
        verifier = self._verifiers.get(department)
        if verifier is None:
            return 404
        try:
            verifier.verify(body, headers, json_parse=False)
        except WebhookVerificationError:
            RECEIVED.labels(department, "bad_signature").inc()
            return 401
        webhook_id = {k.lower(): v for k, v in headers.items()}["webhook-id"]
        with self._lock:
            repeat = webhook_id in self._seen
            self._seen.add(webhook_id)
        RECEIVED.labels(department, "repeat" if repeat else "accepted").inc()
        return 200

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receivers = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                department = self.path.rstrip("/").rsplit("/", 1)[-1]
                status = receivers.receive(department, body, dict(self.headers))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass  # one line per delivery would drown the simulator's log

        return Handler
