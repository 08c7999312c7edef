"""Keeping the broker in step with the registry, all the time.

:class:`AccessEnforcer` runs next to the registry API (``xietong registry serve``) or on
its own (``xietong registry reconcile-acls --watch``). Every ``interval`` seconds, and at
once when nudged after a change through the API, it

1. expires the subscriptions whose ``valid_until`` has passed (audited, as the system),
2. reads every department's grant (:func:`registry.service.access_grants`),
3. reconciles the department topics and ACLs on the broker (:mod:`registry.acl`) — the
   topics only where the ACLs are not the registry's (:func:`manages_acls`): an open
   broker (no SASL, as in the compose cluster) has none, and where Strimzi's User
   Operator owns users and ACLs, ``XIETONG_REGISTRY_ACL_RECONCILER=false`` keeps the two
   from undoing each other's work.

So an approval opens access, and a revocation or expiry closes it, within seconds.
A failed round (broker or database unreachable) is logged and counted, and retried on
the next tick; it never stops the loop.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka.admin import AdminClient
from prometheus_client import Counter, Gauge, Histogram

from registry import db
from registry.acl import DepartmentAccessReport, reconcile_departments
from registry.service import access_grants, expire_due, log_event, utcnow
from registry.settings import RegistrySettings, get_registry_settings
from xietong.settings import Settings

logger = logging.getLogger(__name__)

ROUNDS = Counter(
    "xietong_registry_access_rounds", "Access reconciliation rounds, by outcome", ("outcome",)
)
ROUND_SECONDS = Histogram(
    "xietong_registry_access_round_seconds", "Time of one access reconciliation round"
)
ACL_CHANGES = Counter(
    "xietong_registry_acl_changes", "ACLs created or removed on the broker", ("change",)
)
LAST_SUCCESS = Gauge(
    "xietong_registry_access_last_success_timestamp_seconds",
    "When the broker last matched the registry (Unix time)",
)


def manages_acls(settings: Settings, registry: RegistrySettings) -> bool:
    """Whether the registry creates and removes department ACLs: only on a broker that
    authenticates (SASL), and only while its ACL reconciler is on."""
    return registry.acl_reconciler and settings.kafka_security_protocol.startswith("SASL")


class AccessEnforcer:
    """Expires due subscriptions and reconciles the broker, on a timer and on demand."""

    def __init__(
        self,
        database_url: str,
        settings: Settings,
        admin: AdminClient,
        interval: float = 5.0,
        registry: RegistrySettings | None = None,
    ) -> None:
        self.sessions = db.session_factory(database_url)
        self.settings = settings
        self.admin = admin
        self.interval = interval
        self.acls = manages_acls(settings, registry or get_registry_settings())
        self._nudged = threading.Event()

    def enforce_once(self) -> DepartmentAccessReport:
        """One round: expire, read the grants, reconcile the broker."""
        with ROUND_SECONDS.time():
            now = utcnow()
            with db.transaction(self.sessions) as session:
                expired = expire_due(session, now)
                grants = access_grants(session, now)
            report = reconcile_departments(self.admin, self.settings, grants, acls=self.acls)
        ACL_CHANGES.labels("created").inc(len(report.acls.created))
        ACL_CHANGES.labels("removed").inc(len(report.acls.deleted))
        LAST_SUCCESS.set(time.time())
        if expired or report.acls.created or report.acls.deleted:
            log_event(
                "access_reconciled",
                expired=[subscription.id for subscription in expired],
                acls_created=len(report.acls.created),
                acls_removed=len(report.acls.deleted),
            )
        return report

    def nudge(self) -> None:
        """Ask for a round now (after a change that may alter someone's access)."""
        self._nudged.set()

    def run(self, stop: threading.Event) -> None:
        """Reconcile every ``interval`` seconds, or sooner when nudged, until ``stop``."""
        if not self.acls:
            logger.info(
                "department ACLs are not the registry's here (open broker, or"
                " XIETONG_REGISTRY_ACL_RECONCILER=false): only department topics are made"
            )
        while not stop.is_set():
            try:
                self.enforce_once()
                ROUNDS.labels("ok").inc()
            except Exception:
                ROUNDS.labels("failed").inc()
                logger.exception("access reconciliation failed; retrying in %.0fs", self.interval)
            self._nudged.wait(self.interval)
            self._nudged.clear()

    def start(self) -> tuple[threading.Thread, threading.Event]:
        """Run in a daemon thread; set the returned event to stop it."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self.run, args=(stop,), name="access-enforcer", daemon=True
        )
        thread.start()
        return thread, stop
