"""双告知: a registration that needs a permit is pushed to each approving department.

``rules`` holds the business rules (plain values in, outputs out), ``app`` the Faust
wiring, ``settings`` the ``XIETONG_DUAL_NOTICE_*`` settings.
"""
