//! Black-box tests of the sse-relay binary against real redis-server processes.

mod authorization;
mod configuration;
mod cors;
mod delivery;
mod glob_matches_redis;
mod http_heads;
mod limits;
mod log_tail;
mod lost_log;
mod metrics;
mod outage;
mod probe;
mod resume;
mod shutdown;
mod slow_clients;
mod sse_encoding;
mod wildcards;
