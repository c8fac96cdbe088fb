//! Whole-system tests: both binaries together — an API write arriving on an event stream, the
//! dashboard in a real browser, the configuration the Helm chart renders, and several replicas
//! behind a real load balancer behaving as one system, and the Redis deployments users run (TLS,
//! ACL users).

mod balancers;
mod browser;
mod chart_config;
mod cluster;
mod end_to_end;
mod failover;
mod prometheus;
mod redis_acl;
mod redis_tls;
mod restricted_redis;
mod sentinel_failover;
mod steady_writes;
mod topology;
