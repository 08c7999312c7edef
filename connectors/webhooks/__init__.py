"""Webhooks: every department's inbox items pushed to its registered endpoint.

:mod:`~connectors.webhooks.delivery` (body, Standard Webhooks signature, outcomes,
backoff), :mod:`~connectors.webhooks.lanes` (per-department scheduling),
:mod:`~connectors.webhooks.worker` (``xietong webhooks run``),
:mod:`~connectors.webhooks.operations` (status, dead letters, replay). See README.md.
"""
