//! The floor `gitops serve` is measured against (`benches/load/serve.sh`): a bare axum handler
//! that checks a GitHub delivery's HMAC and answers 202, storing and parsing nothing.
//!
//!     webhook-floor ADDR SECRET

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use sha2::Sha256;

fn hex(s: &str) -> Option<Vec<u8>> {
    (s.len() % 2 == 0)
        .then(|| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten()
}

async fn receive(
    State(secret): State<Arc<Vec<u8>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(hex);
    let Some(signature) = signature else {
        return StatusCode::UNAUTHORIZED;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&secret) else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    mac.update(&body);
    match mac.verify_slice(&signature) {
        Ok(()) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::UNAUTHORIZED,
    }
}

/// The allocator `gitops` uses, so that the two differ only in what they do.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(secret)) = (args.next(), args.next()) else {
        eprintln!("usage: webhook-floor ADDR SECRET");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().expect("an address such as 127.0.0.1:9000");
    let app = Router::new()
        .route("/webhooks/github", post(receive))
        .with_state(Arc::new(secret.into_bytes()));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("listening");
    eprintln!(
        "listening on http://{}",
        listener.local_addr().expect("an address")
    );
    axum::serve(listener, app).await.expect("serving");
}
