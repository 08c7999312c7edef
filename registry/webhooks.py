"""Webhook endpoints (推送地址): a department registers where its inbox items are pushed.

The operations over a session, as :mod:`registry.service`'s are: each change is audited
(the secrets left out, :class:`~registry.models.WebhookEndpoint`), functions flush and
never commit, refusals are :mod:`registry.errors` exceptions naming the field. A
department manages its own endpoint; an administrator any::

    with transaction(session_factory(url)) as session:
        made = register_webhook(
            session, Actor.department("hz-health"), "hz-health", "https://oa.hz-health.gov.cn/hook"
        )
        made.secret                         # 'whsec_…', shown this once
        rotate_secret(session, Actor.department("hz-health"), made.endpoint.id)

The secret is Standard Webhooks' (``whsec_`` and 32 random bytes in base64); the worker
(``connectors/webhooks``) signs every delivery with it. A rotation makes a new secret and
keeps the previous one signing for a grace period (``DEFAULT_ROTATION_GRACE``): every
delivery meanwhile carries both signatures, so the receiver may switch at any moment.

Only ``https://`` endpoints are accepted, unless ``allow_http`` (the setting
``XIETONG_REGISTRY_WEBHOOK_ALLOW_HTTP``, for the local stack and tests).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from registry import audit
from registry.audit import Actor
from registry.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from registry.models import Department, WebhookEndpoint, row_snapshot
from registry.service import get_department, log_event, utcnow

#: How long the previous secret keeps signing after a rotation.
DEFAULT_ROTATION_GRACE = timedelta(hours=24)
SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2000


@dataclass(frozen=True)
class RegisteredWebhook:
    """An endpoint and its new secret, which is shown this once."""

    endpoint: WebhookEndpoint
    secret: str


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def endpoint_url(url: str, *, allow_http: bool) -> str:
    """``url`` if it may be an endpoint: https (http only when allowed), a host, no
    user name or password in it; else InvalidInputError naming ``url``."""
    schemes = ("https", "http") if allow_http else ("https",)
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # an unclosed [IPv6 literal
        host = None
    if len(url) > MAX_URL_LENGTH or host is None or parts.scheme not in schemes:
        wanted = " or ".join(f"{scheme}://host/path" for scheme in schemes)
        plain_http = (
            ""
            if allow_http
            else "; plain http only on a test host (the setting"
            " XIETONG_REGISTRY_WEBHOOK_ALLOW_HTTP)"
        )
        raise InvalidInputError(
            f"url {url[:100]!r}: expected an absolute {wanted} of at most"
            f" {MAX_URL_LENGTH} characters{plain_http}",
            field="url",
        )
    if parts.username or parts.password:
        raise InvalidInputError(
            "url: no user name or password in the address; deliveries are authenticated by"
            " their signature (webhook-signature)",
            field="url",
        )
    return url


def register_webhook(
    session: Session,
    actor: Actor,
    department: str,
    url: str,
    *,
    cloudevents: bool = False,
    allow_http: bool = False,
    now: datetime | None = None,
) -> RegisteredWebhook:
    """Register the department's endpoint (one per department) with a new secret."""
    _require_own(actor, department, "register a webhook")
    owner = get_department(session, department)
    existing = _endpoint_of(session, owner)
    if existing is not None:
        raise ConflictError(
            f"department {department} has webhook {existing.id} already ({existing.url}):"
            " change it (PATCH /webhooks/{id}) or delete it first",
            field="department",
        )
    moment = now or utcnow()
    secret = new_secret()
    endpoint = WebhookEndpoint(
        department_id=owner.id,
        url=endpoint_url(url, allow_http=allow_http),
        cloudevents=cloudevents,
        secret=secret,
        previous_secret=None,
        previous_secret_valid_until=None,
        created_at=moment,
        created_by=str(actor),
        updated_at=moment,
        secret_rotated_at=None,
    )
    endpoint.department = owner
    audit.created(session, actor, "webhook.register", endpoint)
    session.flush()
    log_event("webhook.registered", webhook=endpoint.id, department=department, url=url)
    return RegisteredWebhook(endpoint, secret)


def list_webhooks(session: Session, actor: Actor) -> Sequence[WebhookEndpoint]:
    """A department's own endpoint; an administrator's: every endpoint."""
    query = sa.select(WebhookEndpoint).options(joinedload(WebhookEndpoint.department))
    if not actor.is_admin and actor.kind is not audit.ActorKind.SYSTEM:
        query = query.join(Department).where(Department.code == actor.department_code)
    return session.scalars(query.order_by(WebhookEndpoint.id)).all()


def get_webhook(session: Session, actor: Actor, endpoint_id: int) -> WebhookEndpoint:
    """One endpoint; another department's is 404, as if it did not exist."""
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or not _may_manage(actor, endpoint.department.code):
        raise NotFoundError(f"no webhook {endpoint_id}", field="webhook_id")
    return endpoint


def update_webhook(
    session: Session,
    actor: Actor,
    endpoint_id: int,
    *,
    url: str | None = None,
    cloudevents: bool | None = None,
    allow_http: bool = False,
    now: datetime | None = None,
) -> WebhookEndpoint:
    """Change an endpoint's address or its format; the secret stays."""
    endpoint = get_webhook(session, actor, endpoint_id)
    before = row_snapshot(endpoint)
    if url is not None:
        endpoint.url = endpoint_url(url, allow_http=allow_http)
    if cloudevents is not None:
        endpoint.cloudevents = cloudevents
    endpoint.updated_at = now or utcnow()
    audit.updated(session, actor, "webhook.update", endpoint, before)
    session.flush()
    return endpoint


def rotate_secret(
    session: Session,
    actor: Actor,
    endpoint_id: int,
    *,
    grace: timedelta = DEFAULT_ROTATION_GRACE,
    now: datetime | None = None,
) -> RegisteredWebhook:
    """A new secret; the previous one keeps signing (beside it) for ``grace``."""
    endpoint = get_webhook(session, actor, endpoint_id)
    moment = now or utcnow()
    before = row_snapshot(endpoint)
    secret = new_secret()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_valid_until = moment + grace
    endpoint.secret = secret
    endpoint.secret_rotated_at = endpoint.updated_at = moment
    audit.updated(session, actor, "webhook.rotate-secret", endpoint, before)
    session.flush()
    log_event("webhook.secret_rotated", webhook=endpoint.id, grace_seconds=grace.total_seconds())
    return RegisteredWebhook(endpoint, secret)


def delete_webhook(session: Session, actor: Actor, endpoint_id: int) -> None:
    """Stop pushing to the department: its items are no longer delivered (the inbox keeps
    them for a Kafka client)."""
    endpoint = get_webhook(session, actor, endpoint_id)
    audit.deleted(session, actor, "webhook.delete", endpoint)
    session.flush()
    log_event("webhook.deleted", webhook=endpoint_id)


def endpoints_by_department(session: Session) -> dict[str, WebhookEndpoint]:
    """Department code → its endpoint, for the webhook worker (reading only)."""
    rows = session.scalars(
        sa.select(WebhookEndpoint).options(joinedload(WebhookEndpoint.department))
    ).all()
    return {row.department.code: row for row in rows}


def _endpoint_of(session: Session, department: Department) -> WebhookEndpoint | None:
    return session.scalar(
        sa.select(WebhookEndpoint).where(WebhookEndpoint.department_id == department.id)
    )


def _may_manage(actor: Actor, department: str) -> bool:
    return (
        actor.is_admin
        or actor.kind is audit.ActorKind.SYSTEM
        or (actor.department_code == department)
    )


def _require_own(actor: Actor, department: str, what: str) -> None:
    if not _may_manage(actor, department):
        raise ForbiddenError(
            f"{actor} may not {what} for department {department}: a department manages its"
            " own webhook, an administrator any",
            field="department",
        )
