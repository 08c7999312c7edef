"""The credit sink: the platform's records in the credit database, for auditors.

* :mod:`.tables` — what is written where (one mapping per record type);
* :mod:`.writer` — one batch, one transaction: rows, log entries, offsets;
* :mod:`.chain` — the tamper-evident log (hash chains signed with Ed25519);
* :mod:`.sink` — the consumer: live (``xietong sink run``) and backfill;
* :mod:`.reports` — what ``xietong audit entity|department`` prints;
* ``migrations/`` — the credit database's schema (Alembic), auditor views and role;
* ``COOKBOOK.md`` — the SQL an auditor types.
"""
