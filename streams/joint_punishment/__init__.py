"""一处违法、处处受限: a listing or serious violation restricts the entity everywhere.

``rules`` holds the business rules (plain values in, outputs out), ``app`` the Faust
wiring, ``settings`` the ``XIETONG_JOINT_PUNISHMENT_*`` settings.
"""
