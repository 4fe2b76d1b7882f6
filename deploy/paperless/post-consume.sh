#!/bin/sh
# Paperless-ngx post-consume script: hands the new document to candlelight's queue.
#
# Paperless runs it with no arguments and DOCUMENT_ID in the environment, synchronously inside
# the consume task, so it only enqueues (candlelight answers 202 at once) and never fails the
# consumption: when candlelight is unreachable the poller picks the document up later.
#
#   PAPERLESS_POST_CONSUME_SCRIPT=/usr/src/paperless/scripts/post-consume.sh
#   CANDLELIGHT_URL            default http://ollama.ml.svc:11434
#   CANDLELIGHT_WEBHOOK_TOKEN  optional, when candlelight requires one
set -u
url="${CANDLELIGHT_URL:-http://ollama.ml.svc:11434}/api/paperless/webhook"
id="${DOCUMENT_ID:-}"
case "$id" in
  ''|*[!0-9]*) echo "post-consume: DOCUMENT_ID '$id' is not a document id; nothing sent" >&2; exit 0 ;;
esac
body="{\"document_id\": \"$id\"}"
if command -v curl >/dev/null 2>&1; then
  if [ -n "${CANDLELIGHT_WEBHOOK_TOKEN:-}" ]; then
    out=$(curl -sS -m 5 -X POST -H 'Content-Type: application/json' \
      -H "Authorization: Bearer $CANDLELIGHT_WEBHOOK_TOKEN" -d "$body" -w ' HTTP %{http_code}' "$url" 2>&1)
  else
    out=$(curl -sS -m 5 -X POST -H 'Content-Type: application/json' -d "$body" \
      -w ' HTTP %{http_code}' "$url" 2>&1)
  fi
else
  out=$(URL="$url" BODY="$body" python3 - <<'PY' 2>&1
import os, urllib.request
req = urllib.request.Request(os.environ["URL"], data=os.environ["BODY"].encode(), method="POST",
                             headers={"Content-Type": "application/json"})
tok = os.environ.get("CANDLELIGHT_WEBHOOK_TOKEN")
if tok:
    req.add_header("Authorization", "Bearer " + tok)
with urllib.request.urlopen(req, timeout=5) as r:
    print(r.read().decode(), "HTTP", r.status)
PY
)
fi
echo "post-consume: document $id -> candlelight: $out"
exit 0
