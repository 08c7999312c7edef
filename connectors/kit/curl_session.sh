#!/usr/bin/env bash
# A department system's session with the inbox API in curl and jq (the guide:
# connectors/kit/README.md): list the open pushes and keep the cursor, look at one push,
# claim it, give 反馈 on a hit, and poll each action until the processor APPLIED or
# REJECTED it. tests/integration/test_kit.py runs it against the stack.
#
#   INBOX=http://127.0.0.1:8430 TOKEN=xtr_… PUSH_ID=… HIT_ID=… bash connectors/kit/curl_session.sh
#
# PUSH_ID and HIT_ID are ids from the listing (GET /v1/inbox); either may be left unset
# to skip its step. CURSOR, when set, is where the listing resumes (next_cursor of the
# last session). Exits 0 when every action was applied, 3 when one was rejected, 4 when
# one is still PENDING after WAIT seconds (30).
set -euo pipefail

: "${INBOX:?the inbox API, e.g. http://127.0.0.1:8430}" "${TOKEN:?a registry token}"
WAIT=${WAIT:-30}
auth=(-H "Authorization: Bearer $TOKEN")

# The open pushes after CURSOR, page by page; the last next_cursor is where to resume.
cursor=${CURSOR:-}
while :; do
  page=$(curl -sSf "${auth[@]}" -G "$INBOX/v1/inbox" --data-urlencode "kind=push" \
    ${cursor:+--data-urlencode "cursor=$cursor"})
  jq -r '.items[] | "\(.kind)\t\(.state)\t\(.id)\t\(.uscc)\t\(.title)\tdue \(.deadline)"' <<<"$page"
  cursor=$(jq -r .next_cursor <<<"$page")
  [ "$(jq -r .more <<<"$page")" = true ] || break
done
echo "resume with cursor $cursor"

# POST an action with an Idempotency-Key of our own (sent again after a 503 or a lost
# answer, it is the same action), then poll its outcome.
act() {
  local path=$1 body=$2 key=$3 answer status
  for attempt in 1 2 3 4 5; do
    answer=$(curl -sS -w '\n%{http_code}' -X POST "${auth[@]}" -H "Idempotency-Key: $key" \
      -H 'Content-Type: application/json' -d "$body" "$INBOX$path")
    status=${answer##*$'\n'}
    [ "$status" != 503 ] && break
    sleep "$attempt"
  done
  if [ "$status" != 202 ]; then
    echo "$path: $status ${answer%$'\n'*}" >&2
    return 1
  fi
  jq -r .action_id <<<"${answer%$'\n'*}"
}

outcome() {
  local action_id=$1 found status deadline=$((SECONDS + WAIT))
  while :; do
    found=$(curl -sSf "${auth[@]}" "$INBOX/v1/actions/$action_id")
    status=$(jq -r .status <<<"$found")
    if [ "$status" != PENDING ] || [ "$SECONDS" -ge "$deadline" ]; then
      break
    fi
    sleep 0.5
  done
  echo "action $action_id: $status $(jq -c '{action, reason}' <<<"$found")"
  case $status in APPLIED) return 0 ;; REJECTED) return 3 ;; *) return 4 ;; esac
}

if [ -n "${PUSH_ID:-}" ]; then
  # One push: its state now, and every version the processor published.
  curl -sSf "${auth[@]}" "$INBOX/v1/inbox/$PUSH_ID" |
    jq -c '{state: .item.state, deadline: .item.deadline, versions: [.versions[] | {version, state}]}'
  claim=$(act "/v1/pushes/$PUSH_ID/claim" '{"operator": "王芳"}' "claim-$PUSH_ID")
  outcome "$claim"
fi

if [ -n "${HIT_ID:-}" ]; then
  feedback=$(act "/v1/hits/$HIT_ID/feedback" '{"outcome": "APPLIED"}' "feedback-$HIT_ID")
  outcome "$feedback"
fi
