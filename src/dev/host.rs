//! The DNS-rebinding guard of everything `dev` serves: a web page the developer visits can
//! make its own name resolve to 127.0.0.1 and then talk to the loopback issuer, which mints
//! tokens for anyone; what it cannot change is the `Host` its requests carry. So the dev
//! servers answer only requests whose `Host` is a loopback name or address.

use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::{Either, Ready, ready};

/// Serves a request only if its `Host` is loopback; 421 otherwise. A layer of its own (not
/// `from_fn`), so that the check costs no box and no copy of the service per request.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopbackOnly;

impl<S> tower::Layer<S> for LoopbackOnly {
    type Service = LoopbackOnlyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoopbackOnlyService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct LoopbackOnlyService<S> {
    inner: S,
}

impl<S> tower::Service<Request> for LoopbackOnlyService<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        if host.is_some_and(is_loopback_host) {
            Either::Right(self.inner.call(request))
        } else {
            Either::Left(ready(Ok((
                StatusCode::MISDIRECTED_REQUEST,
                "this development server answers only requests addressed to a loopback host (localhost, 127.0.0.1 or [::1])\n",
            )
                .into_response())))
        }
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_and_addresses_are_loopback_hosts() {
        for host in [
            "localhost",
            "localhost:8080",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:80",
            "[::2]:80",
            "",
            "127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
