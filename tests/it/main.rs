//! Integration tests: the real broker, dev issuer and simulated cluster on loopback, spoken to
//! over HTTP (and kubectl).

mod common;
mod flow;
mod refusals;
mod sim_cluster;
