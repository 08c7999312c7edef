"""Xietong (协同): the platform's shared core.

Settings, the Kafka client factory, topic declarations, the local stack and the
command line live here; the components live in ``connectors``, ``streams``,
``schemas`` and ``registry``.
"""
