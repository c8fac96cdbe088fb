#!/bin/sh
# Starts Redis (unless one already answers on REDIS_PORT) and the relay in the foreground.
# Ctrl-C stops both. Environment: REDIS_PORT (6379), RELAY_PORT (8080), and any SSE_RELAY__* key.
set -eu
cd "$(dirname "$0")/.."

REDIS_PORT="${REDIS_PORT:-6379}"
RELAY_PORT="${RELAY_PORT:-8080}"
RUN_DIR="$PWD/.run"
mkdir -p "$RUN_DIR"

redis_pid=""
cleanup() {
    if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT INT TERM

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

export SSE_RELAY__REDIS__URL="${SSE_RELAY__REDIS__URL:-redis://127.0.0.1:$REDIS_PORT}"
export SSE_RELAY__LISTEN="${SSE_RELAY__LISTEN:-127.0.0.1:$RELAY_PORT}"
export SSE_RELAY__SHUTDOWN__DRAIN_DELAY_MS="${SSE_RELAY__SHUTDOWN__DRAIN_DELAY_MS:-0}"
export SSE_RELAY__SHUTDOWN__DRAIN_WINDOW_MS="${SSE_RELAY__SHUTDOWN__DRAIN_WINDOW_MS:-500}"

cat <<MSG

sse-relay on http://127.0.0.1:$RELAY_PORT
  stream:   http://127.0.0.1:$RELAY_PORT/events
  ready:    http://127.0.0.1:$RELAY_PORT/readyz
  metrics:  http://127.0.0.1:$RELAY_PORT/metrics

Watch the stream (another terminal):
  curl -N 'http://127.0.0.1:$RELAY_PORT/events?channel=weatherforecast.*'
Publish an event:
  redis-cli -p $REDIS_PORT PUBLISH weatherforecast.created '{"summary":"Warm","temperatureC":25}'

Ctrl-C stops everything.

MSG

./target/release/sse-relay "$@" &
relay_pid=$!
# Forward Ctrl-C / TERM to the relay so it drains, then stop Redis.
trap 'kill -TERM "$relay_pid" 2>/dev/null || true' INT TERM
wait "$relay_pid" || true
wait "$relay_pid" 2>/dev/null || true
