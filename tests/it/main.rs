//! Integration tests: the real broker, dev issuer and simulated cluster on loopback, spoken to
//! over HTTP (and kubectl).

// A failed expectation in a test is the test failing; helpers shared by tests count too.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod admission_policy;
mod audit;
mod browser;
mod cli;
mod cloud_run;
mod cloud_run_config;
mod cloud_run_python;
mod common;
mod detector;
mod end;
mod end_props;
mod extend;
mod flow;
mod google;
mod images;
mod kinds;
mod lifecycle;
mod metrics;
mod pages;
mod policy_approvals;
mod policy_check_config;
mod policy_corpus;
mod policy_env;
mod policy_props;
mod python;
mod refusals;
mod replicas;
mod review;
mod rollback;
mod sim_cluster;
mod store;
mod tokens;
