#!/usr/bin/env bash
# The seed's curl flow against a running DocFlow (scripts/dev, or the compose
# stack through nginx): register, log in, upload, create a job with an
# Idempotency-Key, replay it, wait for the job, fetch the result.
#   BASE_URL=http://127.0.0.1:8000 scripts/smoke_test.sh [FILE]
# Exits non-zero, saying which step failed, if anything is off.
set -euo pipefail
base="${BASE_URL:-http://127.0.0.1:8000}"
api="$base/api/v1"
fail() { echo "smoke test FAILED: $*" >&2; exit 1; }
command -v jq >/dev/null || fail "jq is required"

file="${1:-}"
if [ -z "$file" ]; then
  file="$(mktemp --suffix=.txt)"
  trap 'rm -f "$file"' EXIT
  printf 'DocFlow smoke test.\nThe quick brown fox jumps over the lazy dog.\n' >"$file"
fi
case "$file" in
  *.pdf) type=application/pdf ;;
  *.png) type=image/png ;;
  *.jpg|*.jpeg) type=image/jpeg ;;
  *) type=text/plain ;;
esac

email="smoke-$(date +%s)-$RANDOM@example.com"
password="smoke-test-password-1"

curl -fsS "$api/health/ready" >/dev/null || fail "readiness: $(curl -sS "$api/health/ready")"

status=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$api/auth/register" \
  -H 'content-type: application/json' -d "{\"email\":\"$email\",\"password\":\"$password\"}")
[ "$status" = 201 ] || fail "register answered $status"

token=$(curl -fsS -X POST "$api/auth/login" -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"$password\"}" | jq -r .access_token)
[ -n "$token" ] && [ "$token" != null ] || fail "login returned no access token"
auth=(-H "authorization: Bearer $token")

doc=$(curl -fsS -X POST "$api/documents/upload" "${auth[@]}" -F "file=@$file;type=$type" | jq -r .id)
[ -n "$doc" ] && [ "$doc" != null ] || fail "upload returned no document id"
echo "uploaded $file as document $doc"

key="smoke-$(date +%s%N)"
create() {
  curl -sS -w '\n%{http_code}' -X POST "$api/jobs" "${auth[@]}" \
    -H 'content-type: application/json' -H "idempotency-key: $key" -d "{\"document_id\":\"$doc\"}"
}
first=$(create)
[ "$(tail -n1 <<<"$first")" = 201 ] || fail "create job answered $(tail -n1 <<<"$first"): $(head -n1 <<<"$first")"
job=$(head -n1 <<<"$first" | jq -r .id)
replay=$(create)
[ "$(tail -n1 <<<"$replay")" = 200 ] || fail "idempotent replay answered $(tail -n1 <<<"$replay"), expected 200"
[ "$(head -n1 <<<"$replay" | jq -r .id)" = "$job" ] || fail "idempotent replay returned another job"
echo "job $job created; replay with the same Idempotency-Key returned it with 200"

for _ in $(seq 1 120); do
  state=$(curl -fsS "$api/jobs/$job" "${auth[@]}" | jq -r .status)
  case "$state" in
    succeeded) break ;;
    failed) fail "job failed: $(curl -fsS "$api/jobs/$job" "${auth[@]}" | jq -r .last_error)" ;;
  esac
  sleep 0.5
done
[ "$state" = succeeded ] || fail "job still $state after 60 s"

result=$(curl -fsS "$api/documents/$doc/result" "${auth[@]}")
kind=$(jq -r .result.kind <<<"$result")
words=$(jq -r '.result.counts.words // 0' <<<"$result")
echo "result: kind=$kind words=$words"
echo "smoke test passed"
