#!/bin/sh
# Starts Redis (unless one already answers on REDIS_PORT), the relay and forecast-api (SQLite in
# ./data), and prints how to try the whole path. Ctrl-C stops everything.
# Environment: REDIS_PORT (6379), RELAY_PORT (8080), API_PORT (8081), and any SSE_RELAY__* or
# FORECAST_API__* key.
set -eu
cd "$(dirname "$0")/.."

REDIS_PORT="${REDIS_PORT:-6379}"
RELAY_PORT="${RELAY_PORT:-8080}"
API_PORT="${API_PORT:-8081}"
RUN_DIR="$PWD/.run"
mkdir -p "$RUN_DIR"

redis_pid=""
relay_pid=""
api_pid=""
stop_all() {
    for pid in $api_pid $relay_pid; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in $api_pid $relay_pid; do wait "$pid" 2>/dev/null || true; done
    if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; fi
}
trap stop_all EXIT
trap 'exit 0' INT TERM

if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    echo "using the Redis already running on 127.0.0.1:$REDIS_PORT"
else
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --dir "$RUN_DIR" --logfile "$RUN_DIR/redis.log" &
    redis_pid=$!
    i=0
    until redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -gt 50 ]; then
            echo "error: redis-server did not start on port $REDIS_PORT; see $RUN_DIR/redis.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "started redis-server on 127.0.0.1:$REDIS_PORT (log: $RUN_DIR/redis.log)"
fi

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
ADMIN_KEY="${FORECAST_API__AUTH__ADMIN_KEY:-$(random_hex 24)}"
JWT_SECRET="${FORECAST_API__AUTH__RELAY_JWT_SECRET:-$(random_hex 32)}"

export SSE_RELAY__REDIS__URL="${SSE_RELAY__REDIS__URL:-redis://127.0.0.1:$REDIS_PORT}"
export SSE_RELAY__LISTEN="${SSE_RELAY__LISTEN:-127.0.0.1:$RELAY_PORT}"
export SSE_RELAY__AUTH__JWT_SECRET="${SSE_RELAY__AUTH__JWT_SECRET:-$JWT_SECRET}"
export SSE_RELAY__CORS__ALLOWED_ORIGINS="${SSE_RELAY__CORS__ALLOWED_ORIGINS:-http://127.0.0.1:$API_PORT,http://localhost:$API_PORT}"
export SSE_RELAY__SHUTDOWN__DRAIN_DELAY_MS="${SSE_RELAY__SHUTDOWN__DRAIN_DELAY_MS:-0}"
export SSE_RELAY__SHUTDOWN__DRAIN_WINDOW_MS="${SSE_RELAY__SHUTDOWN__DRAIN_WINDOW_MS:-500}"
export FORECAST_API__REDIS__URL="${FORECAST_API__REDIS__URL:-redis://127.0.0.1:$REDIS_PORT}"
export FORECAST_API__LISTEN="${FORECAST_API__LISTEN:-127.0.0.1:$API_PORT}"
export FORECAST_API__AUTH__ADMIN_KEY="$ADMIN_KEY"
export FORECAST_API__AUTH__RELAY_JWT_SECRET="$JWT_SECRET"
export FORECAST_API__RELAY__PUBLIC_URL="${FORECAST_API__RELAY__PUBLIC_URL:-http://127.0.0.1:$RELAY_PORT}"

./target/release/sse-relay --config config/relay.local.toml &
relay_pid=$!
./target/release/forecast-api &
api_pid=$!

# A user to sign in to the dashboard with (the database in ./data keeps it across runs).
DASHBOARD_USER="${DASHBOARD_USER:-admin}"
DASHBOARD_PASSWORD="${DASHBOARD_PASSWORD:-$(random_hex 12)}"
signin="sign in as $DASHBOARD_USER / $DASHBOARD_PASSWORD"
if command -v curl >/dev/null 2>&1; then
    i=0
    until curl -fs "http://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1 || [ "$i" -gt 100 ]; do
        i=$((i + 1))
        sleep 0.1
    done
    status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$API_PORT/api/users" \
        -H "Authorization: Bearer $ADMIN_KEY" -H 'Content-Type: application/json' \
        -d "{\"username\":\"$DASHBOARD_USER\",\"password\":\"$DASHBOARD_PASSWORD\",\"role\":\"admin\"}" || true)
    case "$status" in
        201) ;;
        409) signin="sign in as $DASHBOARD_USER with the password printed when it was created (or remove ./data to start afresh)" ;;
        *) signin="could not create the user $DASHBOARD_USER (HTTP $status): create one with POST /api/users" ;;
    esac
else
    signin="create a user with POST /api/users and the admin key (curl is not installed)"
fi

cat <<MSG

sse-relay     http://127.0.0.1:$RELAY_PORT   (/events, /readyz, /metrics)
dashboard     http://127.0.0.1:$API_PORT/   ($signin)
forecast-api  http://127.0.0.1:$API_PORT   (/api/weatherforecast, /openapi.json, /readyz, /metrics)
API docs      http://127.0.0.1:$API_PORT/docs   (Swagger UI: Authorize with the admin key, then Try it out)
admin API key $ADMIN_KEY

Try the whole path. Watch the stream (another terminal):
  curl -N 'http://127.0.0.1:$RELAY_PORT/events?channel=weatherforecast.*&channel=demo.*'
Create a forecast:
  curl -X POST http://127.0.0.1:$API_PORT/api/weatherforecast \\
       -H 'Authorization: Bearer $ADMIN_KEY' -H 'Content-Type: application/json' \\
       -d '{"date":"2026-11-23","temperatureC":25,"summary":"Warm"}'
Stop the curl, create another forecast, then resume where you left off:
  curl -N -H 'Last-Event-ID: <the last id: you saw>' 'http://127.0.0.1:$RELAY_PORT/events?channel=weatherforecast.*'
Or publish by hand (raw channel):
  redis-cli -p $REDIS_PORT PUBLISH demo.hello 'Hello from Redis'

Ctrl-C stops everything.

MSG

# Stop everything as soon as either service exits (or on Ctrl-C).
while kill -0 "$relay_pid" 2>/dev/null && kill -0 "$api_pid" 2>/dev/null; do
    sleep 1
done
