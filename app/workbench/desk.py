"""The workbench's desk: the inbox's read and act sides (``connectors/inbox``) as a signed-in
clerk's department uses them, and the catalog entries a page names.

Nothing here decides anything the inbox API does not: a token is the department's registry
token with the API's scopes (``inbox:read`` to see, ``inbox:act`` to act), an item is the
department's or not found, an action is the same ``DepartmentAction`` / ``RestrictionFeedback``
record on the department's inbound topic, acknowledged before the clerk is told it was sent,
with an id from :func:`~connectors.inbox.items.inbox_action_id` (a form sent twice is one
action), and its outcome is the processor's. The forms are checked by the API's own request
models, so a field is refused here exactly as over HTTP, by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError

from app.workbench.sessions import Clerk
from app.workbench.view import Figures, InboxPage, Item, Outcome
from connectors.inbox.actions import InboxActions, NotDelivered, SentAction
from connectors.inbox.api import ACT, READ, FeedbackIn, ReturnIn, StopIn
from connectors.inbox.items import FilterError, InboxFilter, InboxKind, inbox_action_id
from connectors.inbox.store import InboxItem, InboxItemDetail, InboxStore
from connectors.sink.reports import department_figures
from registry import db, service
from registry.directory import RegistryDirectory, TokenHolder
from xietong.http_errors import (
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    ServiceUnavailableError,
)

Answer = TypeVar("Answer")

#: How long the catalog's legal bases are kept before the registry is asked again.
CATALOG_SECONDS = 300.0


class Catalog:
    """The approval items and measures of the registry's catalog, by code: what a page shows
    of an item's 设定依据 and a measure's 法律依据 (re-read every few minutes)."""

    def __init__(self, database_url: str) -> None:
        self.sessions = db.session_factory(database_url)
        self._read_at = 0.0
        self._items: dict[str, dict[str, Any]] = {}
        self._measures: dict[str, dict[str, Any]] = {}

    def approval_item(self, code: str | None) -> dict[str, Any] | None:
        self._refresh()
        return self._items.get(code or "")

    def measure(self, code: str | None) -> dict[str, Any] | None:
        self._refresh()
        return self._measures.get(code or "")

    def _refresh(self) -> None:
        if time.monotonic() - self._read_at < CATALOG_SECONDS:
            return
        try:
            self._read()
        except sa.exc.SQLAlchemyError as error:
            reason = str(getattr(error, "orig", error)).splitlines()[0]
            raise ServiceUnavailableError(
                f"the registry database cannot be reached to read the catalog ({reason}):"
                " retry shortly",
                code="registry_unavailable",
            ) from None
        self._read_at = time.monotonic()

    def _read(self) -> None:
        with db.transaction(self.sessions) as session:
            self._items = {
                row.code: {
                    "code": row.code,
                    "name": row.name,
                    "legal_basis": row.legal_basis,
                    "certificate_name": row.certificate_name,
                }
                for row in service.list_approval_items(session)
            }
            self._measures = {
                row.code: {"code": row.code, "text": row.text, "legal_basis": row.legal_basis}
                for row in service.list_measures(session)
            }


class InboxDesk:
    """The desk of :mod:`app.workbench.web` over the inbox's parts."""

    def __init__(
        self,
        store: InboxStore,
        actions: InboxActions,
        directory: RegistryDirectory,
        catalog: Catalog,
        credit_database_url: str,
    ) -> None:
        self.store = store
        self.actions = actions
        self.directory = directory
        self.catalog = catalog
        self.credit_database_url = credit_database_url

    # -- who -----------------------------------------------------------------------------------

    def verify(self, token: str) -> tuple[str, str]:
        holder = self._holder(token, READ)
        return holder.code, holder.name

    def _holder(self, token: str, scope: str) -> TokenHolder:
        """The token's department, asked again every few seconds (a revoked token is 401:
        the clerk is signed out), with ``scope`` (403 without, as the inbox API)."""
        holder = self.directory.cached(token) or self.directory.verify(token)
        if scope not in holder.scopes:
            raise ForbiddenError(
                f"this token of {holder.code} lacks the scope {scope}: ask a registry"
                f" administrator for a token with it (xietong registry issue-token"
                f" {holder.code} --scope {scope})"
            )
        return holder

    # -- reading -------------------------------------------------------------------------------

    def ping(self) -> None:
        _database(self.store.ping)

    def inbox(
        self, clerk: Clerk, kind: str | None, state: str | None, cursor: str | None, limit: int
    ) -> InboxPage:
        holder = self._holder(clerk.token, READ)
        try:
            wanted = InboxFilter.parse(kind, state, cursor=cursor)
        except FilterError as error:
            raise InvalidInputError(error.message, field=error.field) from None
        page = _database(self.store.page, holder.code, wanted, limit)
        return InboxPage(
            [self._item(found) for found in page.items], page.next_cursor if page.more else None
        )

    def item(self, clerk: Clerk, item_id: str) -> Item:
        holder = self._holder(clerk.token, READ)
        found: InboxItemDetail | None = _database(self.store.item, holder.code, item_id)
        if found is None:
            raise _not_found("item", item_id, holder)
        record = found.record
        extra: dict[str, Any] = {}
        if found.item.kind is InboxKind.PUSH:
            extra["registration"] = _database(self.store.registration_of, holder.code, item_id)
            extra["approval_item"] = self.catalog.approval_item(record.get("item_code"))
        elif found.item.kind is InboxKind.HIT:
            extra["measure"] = self.catalog.measure(record.get("measure_code"))
            extra["matter_type_name"] = self.directory.matter_type_name(
                record.get("matter_type") or ""
            )
        return self._item(
            found.item, record, [_step(version) for version in found.versions], **extra
        )

    def outcome(self, clerk: Clerk, action_id: str) -> Outcome:
        holder = self._holder(clerk.token, READ)
        found = _database(self.store.action, holder.code, action_id)
        return Outcome(action_id, found.status, found.reason)

    def figures(self, clerk: Clerk) -> Figures:
        holder = self._holder(clerk.token, READ)
        claims, feedback = _database(department_figures, self.credit_database_url, holder.code)
        return Figures(
            pushes=claims["pushes"],
            claimed=claims["claimed"],
            claim_rate=_rate(claims["claim_rate"]),
            overdue=claims["overdue"],
            hits_expecting_feedback=feedback["hits_expecting_feedback"],
            fed_back=feedback["fed_back"],
            feedback_rate=_rate(feedback["feedback_rate"]),
            overdue_feedback=feedback["overdue_feedback"],
        )

    def _item(
        self,
        found: InboxItem,
        record: dict[str, Any] | None = None,
        history: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> Item:
        overdue = found.deadline is not None and found.is_open and found.deadline < _now(self)
        return Item(
            id=found.item_id,
            kind=found.kind.value,
            state=found.state,
            uscc=found.uscc,
            entity_name=found.entity_name,
            title=found.title or found.item_id,
            deadline=found.deadline,
            overdue=overdue or found.state in ("OVERDUE", "UNLICENSED"),
            record=record or {},
            history=history or [],
            **extra,
        )

    # -- acting --------------------------------------------------------------------------------

    def claim(self, clerk: Clerk, push_id: str, key: str) -> str:
        return self._on_push(clerk, push_id, "CLAIM", key)

    def return_push(
        self, clerk: Clerk, push_id: str, reason: str, text: str | None, key: str
    ) -> str:
        body = _form(ReturnIn, reason=reason, reason_text=text, operator=clerk.operator)
        return self._on_push(
            clerk, push_id, "RETURN", key, return_reason=body.reason, reason_text=text
        )

    def stop(self, clerk: Clerk, push_id: str, text: str | None, key: str) -> str:
        _form(StopIn, reason_text=text, operator=clerk.operator)
        return self._on_push(clerk, push_id, "STOP", key, reason_text=text)

    def feedback(
        self, clerk: Clerk, hit_id: str, outcome: str, reason: str | None, key: str
    ) -> str:
        body = _form(FeedbackIn, outcome=outcome, reason=reason, operator=clerk.operator)
        holder = self._holder(clerk.token, ACT)
        hit = self._own(holder, hit_id, InboxKind.HIT)
        sent = _broker(
            self.actions.give_feedback,
            holder.code,
            hit,
            inbox_action_id(holder.code, key),
            body.outcome,
            reason=reason,
            operator=clerk.operator,
        )
        return sent.action_id

    def _on_push(self, clerk: Clerk, push_id: str, action: str, key: str, **fields: Any) -> str:
        holder = self._holder(clerk.token, ACT)
        push = self._own(holder, push_id, InboxKind.PUSH)
        sent = _broker(
            self.actions.act_on_push,
            holder.code,
            push,
            action,
            inbox_action_id(holder.code, key),
            operator=clerk.operator,
            **fields,
        )
        return sent.action_id

    def _own(self, holder: TokenHolder, item_id: str, kind: InboxKind) -> InboxItem:
        found = _database(self.store.find, holder.code, item_id)
        if found is None or found.kind is not kind:
            raise _not_found(kind.value, item_id, holder)
        return found


def _now(desk: InboxDesk) -> Any:
    return desk.store.clock.now()


def _rate(value: Any) -> float | None:
    return None if value is None else float(value)


def _step(version: dict[str, Any]) -> dict[str, Any]:
    """One line of an item's 办理记录 from one of its versions."""
    if "feedback_outcome" in version:  # a hit
        state = version.get("feedback_outcome") if version.get("status") == "ACTIVE" else None
        return {
            "at": version.get("fed_back_at") or version.get("raised_at"),
            "state": state or version.get("status"),
            "by": version.get("department_code"),
            "detail": version.get("feedback_reason") or version.get("withdrawn_reason"),
        }
    return {
        "at": version.get("state_changed_at") or version.get("delivered_at"),
        "state": version.get("state") or version.get("record_type"),
        "by": version.get("changed_by"),
        "detail": version.get("reason_text") or version.get("return_reason"),
    }


Form = TypeVar("Form", bound=BaseModel)


def _form(model: type[Form], **fields: Any) -> Form:
    """The form's fields as the inbox API's request model reads them (422 naming the field)."""
    try:
        return model.model_validate(fields)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise InvalidInputError(f"{where}: {problem['msg']}", field=where) from None


def _not_found(what: str, item_id: str, holder: TokenHolder) -> NotFoundError:
    return NotFoundError(
        f"{item_id!r} 不是本部门（{holder.code}）收件箱中的{what}事项", field=f"{what}_id"
    )


def _database(read: Callable[..., Answer], *args: Any) -> Answer:
    try:
        return read(*args)
    except sa.exc.OperationalError as error:
        reason = str(getattr(error, "orig", error)).splitlines()[0]
        raise ServiceUnavailableError(
            f"the credit database does not answer ({reason}): retry shortly",
            code="database_unavailable",
        ) from None


def _broker(send: Callable[..., SentAction], *args: Any, **kwargs: Any) -> SentAction:
    try:
        return send(*args, **kwargs)
    except NotDelivered as error:
        raise ServiceUnavailableError(
            f"the action was not acknowledged by the broker ({error}); nothing was sent:"
            " send the form again",
            code="not_delivered",
        ) from None
