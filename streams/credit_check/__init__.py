"""嵌入式联合奖惩: the synchronous credit check a department's system makes while it
handles a matter for an entity (domain brief §6, "embedded checking with feedback").

A department system asks, for one entity (USCC) and one matter type (政府采购, 土地供应 …)::

    GET /v1/checks?uscc=91330106MA2CD7Q4XU&matter_type=GOVERNMENT_PROCUREMENT
        &matter_date=2026-03-02&matter_ref=ZJCG-2026-0117
    Authorization: Bearer xtr_…                 # the department's registry token

and is answered at once with the entity's listings in force on the matter date (list
type, listed on, planned end, listing authority, reason, basis), the measures of the
joint-punishment catalog that restrict this matter type for those lists (text, legal
basis, implementing sectors, whether and within how many days the department must
report back 反馈), and a verdict: ``RESTRICTED`` when at least one measure applies,
``CLEAR`` otherwise.

**The answer comes from memory.** Every instance holds, materialised from the topics:

* ``credit.list-entries`` (列入/移出, keyed by USCC): one :class:`Listing` per entry id
  and entity, folded by :func:`fold_entry`;
* ``registry.measures`` and ``registry.list-types``, the registry's compacted topics,
  whole (:class:`~streams.runtime.ReferenceData`).

Each is read from the beginning when the service starts; ``/ready`` answers 503 and a
check waits (then answers 503) until all three have been read to the end they had at
start; after that they are followed live, so a listing published now restricts the
entity within about a second.

**When a listing applies** (:meth:`Listing.in_force_on`): on day *d* when
``listed_on ≤ d``, and ``d < planned_removal_on`` (if planned), and ``d < removed_on``
(if removed). A listing effective in the future does not apply yet; one removed on or
before its start never applies; an entity may be on several lists at once; a record
sent twice changes nothing. A removal is final for its entry id: a 列入 of the same
entry re-sent after its 移出 updates the listing's details, never lifts the removal.

**Who checks.** The bearer token is a department's registry API token
(``xietong registry issue-token <department>``), verified by the registry's own service
layer (:func:`registry.service.authenticate`) against the registry database; the
checking department is the token's. An unknown or revoked token is 401, an
administrator token 403 (it has no department). A verified token is remembered for
``XIETONG_CREDIT_CHECK_TOKEN_CACHE_SECONDS`` (5 s), so a revocation takes effect within
that time.

**Every check is itself a matter event** (``MatterEvent``, source ``CREDIT_CHECK``) on
``credit.matter-events``, for the joint-punishment processor and the auditors. Its ids
are deterministic — the check id from department, USCC, matter type and the matter
reference (or date) — so repeating a check repeats the same event. A check only queues
its event; a thread of its own encodes and produces it, off the request's path; a delivery
that fails (or an event that finds the queue full) is counted in
``xietong_credit_check_matter_events_total{outcome}`` and logged with the whole event
as a JSON line, never dropped silently.

Run it with ``xietong credit-check serve [--port 8420]``; settings are
``XIETONG_CREDIT_CHECK_*`` (:class:`CreditCheckSettings`). OpenAPI at ``/docs``;
Prometheus metrics at ``/metrics``.
"""
