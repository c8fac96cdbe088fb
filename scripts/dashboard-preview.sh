#!/bin/sh
# A picture of the Grafana dashboard with real data: runs the system on loopback for a few
# minutes (Redis, two relays, forecast-api, a Prometheus scraping them every second) under
# traffic — streams, writes, refused requests, resumes, and a Redis outage in the middle —
# then plots every panel's queries from that Prometheus (scripts/dashboard-preview.py; Grafana
# itself cannot be installed here) and screenshots the page with headless Chromium.
# Usage: scripts/dashboard-preview.sh [out.png]   (default docs/dashboard-preview.png)
set -eu
cd "$(dirname "$0")/.."
out="${1:-docs/dashboard-preview.png}"
scripts/ensure-deps.sh redis prometheus browser
cargo build --release --locked -p sse-relay -p forecast-api

work="$(mktemp -d)"
pids=""
redis_pid=""
cleanup() {
    for pid in $pids $redis_pid; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { # url
    i=0
    until curl -fs -o /dev/null "$1"; do
        i=$((i + 1))
        if [ "$i" -ge 300 ]; then
            echo "error: $1 did not answer 200; logs:" >&2
            cat "$work"/*.log >&2
            exit 1
        fi
        sleep 0.1
    done
}
REDIS_PORT=$(free_port); RELAY_A=$(free_port); RELAY_B=$(free_port); API=$(free_port); PROM=$(free_port)
ADMIN_KEY="preview-admin-key-0123456789"
JWT_SECRET="preview-relay-jwt-secret-0123456789abcdef"

start_redis() {
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --dir "$work" --logfile "$work/redis.log" &
    redis_pid=$!
}
start_redis
for relay in "a $RELAY_A" "b $RELAY_B"; do
    set -- $relay
    SSE_RELAY__LISTEN="127.0.0.1:$2" SSE_RELAY__POD_ID="preview-$1" SSE_RELAY__AUTH__JWT_SECRET="$JWT_SECRET" \
        SSE_RELAY__REDIS__URL="redis://127.0.0.1:$REDIS_PORT" RUST_LOG=warn \
        ./target/release/sse-relay --config config/relay.local.toml 2>>"$work/relay.log" &
    pids="$pids $!"
done
FORECAST_API__LISTEN="127.0.0.1:$API" FORECAST_API__REDIS__URL="redis://127.0.0.1:$REDIS_PORT" \
    FORECAST_API__DATABASE__URL="sqlite://$work/forecast.db" FORECAST_API__AUTH__ADMIN_KEY="$ADMIN_KEY" \
    FORECAST_API__AUTH__RELAY_JWT_SECRET="$JWT_SECRET" \
    FORECAST_API__OUTBOX__BACKOFF_MAX_MS=1000 RUST_LOG=warn ./target/release/forecast-api 2>>"$work/api.log" &
pids="$pids $!"
cat >"$work/prometheus.yml" <<YML
global: {scrape_interval: 1s, scrape_timeout: 900ms}
scrape_configs:
  - job_name: sse-relay
    static_configs: [{targets: ['127.0.0.1:$RELAY_A', '127.0.0.1:$RELAY_B']}]
  - job_name: forecast-api
    static_configs: [{targets: ['127.0.0.1:$API']}]
YML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$PROM" 2>"$work/prometheus.log" &
pids="$pids $!"
wait_http "http://127.0.0.1:$RELAY_A/readyz"
wait_http "http://127.0.0.1:$RELAY_B/readyz"
wait_http "http://127.0.0.1:$API/readyz"
wait_http "http://127.0.0.1:$PROM/-/ready"

start=$(date +%s)
seconds=150
echo "traffic for $seconds s (a Redis outage from 60 s to 75 s)" >&2
for relay in "$RELAY_A 20" "$RELAY_B 10"; do
    set -- $relay
    i=0
    while [ "$i" -lt "$2" ]; do
        curl -sN --max-time "$seconds" "http://127.0.0.1:$1/events?channel=weatherforecast.*" >/dev/null &
        i=$((i + 1))
    done
done
tick=0
while [ "$(($(date +%s) - start))" -lt "$seconds" ]; do
    elapsed=$(($(date +%s) - start))
    if [ "$elapsed" -ge 60 ] && [ "$elapsed" -lt 75 ] && [ -n "$redis_pid" ]; then
        kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true; redis_pid=""
    elif [ "$elapsed" -ge 75 ] && [ -z "$redis_pid" ]; then
        start_redis
    fi
    curl -s -o /dev/null -X POST "http://127.0.0.1:$API/api/weatherforecast" -H "X-Api-Key: $ADMIN_KEY" \
        -H 'Content-Type: application/json' -d "{\"date\":\"2026-12-05\",\"temperatureC\":$((tick % 40)),\"summary\":\"Mild\"}"
    tick=$((tick + 1))
    if [ $((tick % 8)) -eq 0 ]; then
        curl -s -o /dev/null "http://127.0.0.1:$RELAY_B/events?channel=%5Bbad"
    fi
    if [ $((tick % 15)) -eq 0 ]; then
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$RELAY_A/events?channel=weatherforecast.*&lastEventId=0-0" || true
    fi
    sleep 0.2
done
end=$(date +%s)
sleep 2

python3 scripts/dashboard-preview.py "http://127.0.0.1:$PROM" "$start" "$end" "$work/preview.html"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1180,2290 \
    --screenshot="$work/preview.png" "file://$work/preview.html" 2>/dev/null
mkdir -p "$(dirname "$out")"
cp "$work/preview.png" "$out"
echo "dashboard preview: $out" >&2
