//! Integration tests: the real broker, dev issuer and simulated cluster on loopback, spoken to
//! over HTTP (and kubectl).

// A failed expectation in a test is the test failing; helpers shared by tests count too.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
mod flow;
mod pages;
mod refusals;
mod sim_cluster;
