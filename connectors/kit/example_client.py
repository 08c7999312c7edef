"""An example client of the inbox API, as a department system would write one (httpx only,
nothing of the platform's code): page through the inbox with the cursor, claim or return
a push, give 反馈 on a hit, and poll ``GET /v1/actions/{id}`` until the processor applied
or rejected the action. Copy it, and keep its two habits:

* **resume with the cursor**: keep ``next_cursor`` of the last page and start there next
  time; new items, and items delivered again (escalated, withdrawn), come after it;
* **send again with the same Idempotency-Key**: an action answered 503 (or not answered
  at all) may still have arrived; the same key makes the same action id, applied once.

Run it (``XIETONG_INBOX_URL`` default ``http://127.0.0.1:8430``; the guide is
``connectors/kit/README.md``)::

    export XIETONG_INBOX_TOKEN=xtr_…      # xietong registry issue-token <department>
    python connectors/kit/example_client.py list                    # open items, and the cursor
    python connectors/kit/example_client.py list --kind push --state any --cursor <cursor>
    python connectors/kit/example_client.py claim <push id>         # and wait: APPLIED?
    python connectors/kit/example_client.py return <push id> SCOPE_NOT_IN_JURISDICTION
    python connectors/kit/example_client.py feedback <hit id> APPLIED

An action's command exits 0 when it was APPLIED, 3 when the processor REJECTED it (its
reason is printed), 4 when it is still PENDING after ``--wait`` seconds; any HTTP error
(401, 403, 404, 422 naming the field) exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx


class InboxClient:
    """The inbox API of one department (its token says which)."""

    def __init__(self, base_url: str, token: str, timeout: float = 15.0) -> None:
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def close(self) -> None:
        self.http.close()

    def items(self, cursor: str | None = None, **filters: str) -> Iterator[dict[str, Any]]:
        """Every item after ``cursor`` that ``filters`` select (kind=, state=, since=, until=),
        page by page; :attr:`cursor` is where to resume afterwards."""
        self.cursor = cursor
        while True:
            params = {**filters, **({"cursor": self.cursor} if self.cursor else {})}
            page = self._answer(self.http.get("/v1/inbox", params=params))
            yield from page["items"]
            self.cursor = page["next_cursor"]
            if not page["more"]:
                return

    def item(self, item_id: str) -> dict[str, Any]:
        """One item with its versions and the actions on it."""
        return self._answer(self.http.get(f"/v1/inbox/{item_id}"))

    def claim(self, push_id: str, operator: str | None = None) -> dict[str, Any]:
        return self._act(f"/v1/pushes/{push_id}/claim", {"operator": operator})

    def give_back(self, push_id: str, reason: str, text: str | None = None) -> dict[str, Any]:
        return self._act(f"/v1/pushes/{push_id}/return", {"reason": reason, "reason_text": text})

    def feedback(self, hit_id: str, outcome: str, reason: str | None = None) -> dict[str, Any]:
        return self._act(f"/v1/hits/{hit_id}/feedback", {"outcome": outcome, "reason": reason})

    def outcome(self, action_id: str, wait_seconds: float = 30.0) -> dict[str, Any]:
        """The action's outcome once it is APPLIED or REJECTED (or PENDING after the wait)."""
        deadline = time.monotonic() + wait_seconds
        while True:
            found = self._answer(self.http.get(f"/v1/actions/{action_id}"))
            if found["status"] != "PENDING" or time.monotonic() > deadline:
                return found
            time.sleep(0.5)

    def _act(self, path: str, body: dict[str, Any], attempts: int = 5) -> dict[str, Any]:
        """POST an action; on 503 or no answer, the same again with the same key."""
        key = str(uuid.uuid4())
        for attempt in range(attempts):
            try:
                response = self.http.post(path, json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code != 503:
                return self._answer(response)
            time.sleep(min(2**attempt, 10))
        raise RuntimeError(f"{path}: not accepted after {attempts} attempts")

    @staticmethod
    def _answer(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            error = response.json()
            raise RuntimeError(
                f"{response.status_code} {error['error']}: {error['message']}"
                + (f" (field {error['field']})" if error.get("field") else "")
            )
        return response.json()


#: Exit codes of an action's command, by its outcome.
EXIT_CODES = {"APPLIED": 0, "REJECTED": 3, "PENDING": 4}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A department's inbox over HTTP.")
    parser.add_argument(
        "--wait", type=float, default=30.0, help="Seconds to wait for an action's outcome."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="The inbox's items (open ones by default).")
    listing.add_argument("--kind", help="push, hit, sanction_notice … (comma-separated)")
    listing.add_argument("--state", help="open (default), any, or states: PUSHED,OVERDUE")
    listing.add_argument("--cursor", help="next_cursor of the last run: what came since")
    claiming = commands.add_parser("claim", help="Claim a push (认领) and wait for the outcome.")
    claiming.add_argument("push_id")
    returning = commands.add_parser("return", help="Return a push (退回) with a reason.")
    returning.add_argument("push_id")
    returning.add_argument(
        "reason",
        choices=(
            "NO_SUCH_ITEM",
            "SCOPE_NOT_IN_JURISDICTION",
            "ADDRESS_NOT_IN_JURISDICTION",
            "OTHER",
        ),
    )
    returning.add_argument("--text", help="说明 (required with OTHER)")
    answering = commands.add_parser("feedback", help="反馈 on a hit, and wait for the outcome.")
    answering.add_argument("hit_id")
    answering.add_argument("outcome", choices=("APPLIED", "NOT_APPLICABLE"))
    answering.add_argument("--reason", help="说明 (required with NOT_APPLICABLE)")
    options = parser.parse_args(argv)

    client = InboxClient(
        os.environ.get("XIETONG_INBOX_URL", "http://127.0.0.1:8430"),
        os.environ["XIETONG_INBOX_TOKEN"],
    )
    try:
        if options.command == "list":
            filters = {k: v for k, v in (("kind", options.kind), ("state", options.state)) if v}
            for item in client.items(options.cursor, **filters):
                print(
                    f"{item['kind']:<15} {item['state']:<10} {item['id']}  {item['uscc']}"
                    f"  {item['title'] or ''}  due {item['deadline'] or '-'}"
                )
            print(f"resume with cursor {client.cursor}")
            return 0
        if options.command == "claim":
            accepted = client.claim(options.push_id, operator="example client")
        elif options.command == "return":
            accepted = client.give_back(options.push_id, options.reason, options.text)
        else:
            accepted = client.feedback(options.hit_id, options.outcome, options.reason)
        print(f"accepted: action {accepted['action_id']}")
        outcome = client.outcome(accepted["action_id"], wait_seconds=options.wait)
        print(json.dumps(outcome, ensure_ascii=False))
        return EXIT_CODES.get(outcome["status"], 1)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
