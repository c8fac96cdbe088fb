//! Black-box tests of the deployment: the configuration the Helm chart renders is accepted by
//! the binaries, and several replicas behind a real load balancer behave as one system.

#[path = "../support/mod.rs"]
mod support;

mod chart_config;
mod failover;
mod topology;
