CREATE TABLE forecasts (
    id TEXT PRIMARY KEY NOT NULL,
    date TEXT NOT NULL,
    temperature_c BIGINT NOT NULL,
    summary TEXT,
    version BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX forecasts_by_date ON forecasts (date, id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

-- Events waiting to be published to Redis, written in the same transaction as the change.
CREATE TABLE outbox (
    seq BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    exclude_connection TEXT,
    created_at TEXT NOT NULL
);
