//! The baseline for `scripts/bench-http`: a bare axum 0.8 "hello" on the same runtime
//! defaults as the broker, to which every figure of the broker is compared.
//!
//! Run: `cargo run --release --example hello -- 127.0.0.1:0`; prints `listening on http://...`.

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = Router::new().route("/", get(|| async { "Hello, World!" }));
    axum::serve(listener, app).await?;
    Ok(())
}
