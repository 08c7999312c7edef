"""The registry: departments, data resources, subscriptions, reference catalogs, audit.

See ``registry/README.md``. Modules: :mod:`registry.models` (tables),
:mod:`registry.service` (operations, used by the API and the CLI), :mod:`registry.api`
(FastAPI), :mod:`registry.contract` (request and response bodies), :mod:`registry.audit`
(the audit log), :mod:`registry.outbox` and :mod:`registry.publisher` (the compacted
topics), :mod:`registry.grants` (the broker-ACL hook), :mod:`registry.db`
(sessions and migrations), :mod:`registry.seed` (the sample province).
"""
