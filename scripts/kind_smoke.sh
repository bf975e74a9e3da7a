#!/usr/bin/env bash
# Smoke sale against a deployed coupon-issuer (used by .github/workflows/kind.yml via `make kind-smoke`):
# wait until the autoscaler has scaled the idle consumers to zero (ci/kind-values.yaml: minReplicas
# 0; FROM_ZERO=0 skips this for other values), create a coupon of QUANTITY, press "issue" REQUESTS
# times with distinct users through the API's Service, then wait until the consumers -- scaled up
# from zero by the autoscaler -- have issued exactly QUANTITY coupons.
set -euo pipefail

KUBECTL=${KUBECTL:-kubectl}
NAMESPACE=${NAMESPACE:-coupons}
RELEASE=${RELEASE:-coupon-issuer}
TOKEN=${COUPON_ADMIN_TOKEN:-kind-admin-token}
QUANTITY=${QUANTITY:-50}
REQUESTS=${REQUESTS:-80}
PORT=${PORT:-18080}
DEADLINE_SECONDS=${DEADLINE_SECONDS:-240}
FROM_ZERO=${FROM_ZERO:-1}
BASE="http://127.0.0.1:${PORT}"
CONSUMER="${RELEASE}-consumer"

k() { "$KUBECTL" -n "$NAMESPACE" "$@"; }
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
log() { printf '[smoke] %s\n' "$*"; }

PF_LOG=$(mktemp "${TMPDIR:-/tmp}/coupon-port-forward.XXXXXX")
k port-forward "svc/${RELEASE}-api" "${PORT}:80" >"$PF_LOG" 2>&1 &
PF_PID=$!
trap 'kill "$PF_PID" 2>/dev/null || true; rm -f "$PF_LOG"' EXIT

deadline=$((SECONDS + 60))
until curl -fsS "${BASE}/readyz" >/dev/null 2>&1; do
  if ((SECONDS > deadline)); then log "API never became ready"; cat "$PF_LOG"; exit 1; fi
  sleep 1
done
log "API ready; consumer replicas: $(k get deploy "$CONSUMER" -o jsonpath='{.spec.replicas}')"

# The Deployment starts with one replica (the chart leaves .spec.replicas to the autoscaler); an
# idle autoscaler takes it to zero after its scale-down window. Only from zero does the sale below
# show the autoscaler starting consumers.
if ((FROM_ZERO)); then
  deadline=$((SECONDS + DEADLINE_SECONDS))
  until [[ "$(k get deploy "$CONSUMER" -o jsonpath='{.status.replicas}')" =~ ^0?$ &&
           "$(k get deploy "$CONSUMER" -o jsonpath='{.spec.replicas}')" == 0 ]]; do
    if ((SECONDS > deadline)); then log "the idle consumers were never scaled to zero"; exit 1; fi
    sleep 2
  done
  log "idle consumers scaled to zero after ${SECONDS}s"
fi

expires=$(python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc)+d.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))')
coupon=$(curl -fsS -X POST "${BASE}/api/coupons" \
  -H 'Content-Type: application/json' -H "Authorization: Bearer ${TOKEN}" \
  -d "{\"name\":\"kind smoke\",\"discountType\":\"PERCENT\",\"discountValue\":10,\"totalQuantity\":${QUANTITY},\"minOrderAmount\":0,\"expiresAt\":\"${expires}\"}")
coupon_id=$(json_field id <<<"$coupon")
log "coupon ${coupon_id} (quantity ${QUANTITY})"

accepted=0
refused=0
for i in $(seq 1 "$REQUESTS"); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "${BASE}/api/coupons/${coupon_id}/issue/queue" \
    -H 'Content-Type: application/json' -d "{\"userId\":\"smoke-user-${i}\"}")
  case "$code" in
    202) accepted=$((accepted + 1)) ;;
    410) refused=$((refused + 1)) ;;
    *) log "unexpected status ${code} for request ${i}"; exit 1 ;;
  esac
done
log "accepted=${accepted} sold-out=${refused}"
if ((accepted != QUANTITY)); then log "expected exactly ${QUANTITY} accepted requests"; exit 1; fi

max_replicas=0
issued=0
deadline=$((SECONDS + DEADLINE_SECONDS))
while ((SECONDS < deadline)); do
  ready=$(k get deploy "$CONSUMER" -o jsonpath='{.status.readyReplicas}')
  ready=${ready:-0}
  ((ready > max_replicas)) && max_replicas=$ready
  issued=$(curl -fsS "${BASE}/api/coupons/${coupon_id}" | json_field issuedQuantity)
  log "issued=${issued}/${QUANTITY} consumer ready replicas=${ready}"
  if ((issued == QUANTITY && max_replicas >= 1)); then break; fi
  sleep 2
done

k get deploy "$CONSUMER" -o wide
k get consumerautoscalers.coupons.example.com -o wide 2>/dev/null || true
if ((max_replicas < 1)); then log "the consumer never scaled up"; exit 1; fi
if ((issued != QUANTITY)); then log "issued ${issued}, expected ${QUANTITY}"; exit 1; fi
log "OK: ${issued} issued, consumers scaled to ${max_replicas}"
