//! Approval-gated breakglass for GKE Binary Authorization.

/// Wiring: builds the shared state from a configuration and serves it.
pub mod app;
/// The auditor's side of the history: chain verification, checkpoints, exports.
pub mod audit;
/// Who is calling: OIDC ID tokens as bearer tokens, and the roles they carry.
pub mod auth;
/// The command line: `dev`, `serve`, and the operator's tools.
pub mod cli;
/// The client commands people and scripts use against a running broker's JSON API.
pub mod client;
/// Wall-clock time as a parameter, so tests move time instead of sleeping.
pub mod clock;
/// The configuration file and environment; secrets stay out of `Debug`.
pub mod config;
/// The development OIDC issuer and the simulated cluster behind `dev` mode and the tests.
pub mod dev;
/// Pure rules: ids, states, access, approval rules, manifests, policy, stamps, digests and
/// the audit chain's hash format.
pub mod domain;
/// The broker's own Google identity (Application Default Credentials), shared by targets.
pub mod google;
/// The request lifecycle: every transition, its audit event and the event it publishes.
pub mod lifecycle;
/// Structured log lines in the shape Cloud Logging reads.
pub mod logging;
/// What an operator scrapes: Prometheus metrics of a replica.
pub mod metrics;
/// Everything SQL: requests, approvals and the audit chain on SQLite or PostgreSQL.
pub mod store;
/// Where approved workloads go: the target interface, its registry, Kubernetes and GKE.
pub mod targets;
/// The HTTP surface: pages, JSON API, health, and the router that ties them together.
pub mod web;
/// Background work driven by the store and the clock: apply, undo, lapse.
pub mod workers;
