"""A department's inbox over HTTP: the inbox API (``xietong inbox serve``).

Delivery to departments is a connector's job; this one serves department systems that
have no Kafka client. Two sides, independent of HTTP, so the clerks' workbench uses
them too:

* the **read side**, :class:`~connectors.inbox.store.InboxStore`: what the department's
  inbox was delivered and the state each item is in now, its history, and what became of
  its actions — from the credit database the sink writes, read-only;
* the **act side**, :class:`~connectors.inbox.actions.InboxActions`: claims, returns,
  stops and 反馈 written to the department's inbound topic as its own Kafka client would,
  acknowledged before anyone is told so;

with the pure rules between them in :mod:`~connectors.inbox.items` (kinds, open states,
the cursor, the actions' ids) and the FastAPI service in :mod:`~connectors.inbox.api`.
The department guide for the HTTP API is ``connectors/inbox/README.md``.
"""
