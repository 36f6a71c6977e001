//! Forwarding one REST call from a standby to the leader: method, path,
//! query, headers and body go up; status, headers and the body (streamed, so
//! event streams work) come back.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::watch;

/// Request header naming the instance that forwarded a call; a standby
/// never forwards a call that carries it (no forwarding loops).
pub const FORWARDED_BY: &str = "x-agora-forwarded-by";

/// Largest request body a standby forwards (REST bodies are small).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// and the ones the client library sets itself.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name == header::PROXY_AUTHENTICATE
        || name == header::HOST
        || name == header::CONTENT_LENGTH
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if !is_hop_by_hop(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// An error answer in the frameworks' JSON shape, `{"message": …}`.
pub(crate) fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, axum::Json(serde_json::json!({ "message": text.into() }))).into_response()
}

/// Sends `request` to the leader at `leader` (`HOST:PORT`) and returns its
/// answer; `via` is this instance's address. The answer's body ends early
/// when `closing` turns true (this instance shuts down).
pub(crate) async fn forward(
    client: &reqwest::Client,
    leader: &str,
    via: &str,
    request: Request<Body>,
    closing: watch::Receiver<bool>,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("http://{leader}{path}");
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(e) => {
            return message(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot forward the request body to the leader: {e}"),
            );
        }
    };
    let mut headers = end_to_end(&parts.headers);
    if let Ok(value) = HeaderValue::from_str(via) {
        headers.insert(FORWARDED_BY, value);
    }
    if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>()
        && let Ok(value) = HeaderValue::from_str(&peer.ip().to_string())
    {
        headers.append("x-forwarded-for", value);
    }
    let answer = client
        .request(parts.method, &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let mut answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            tracing::debug!(%leader, error = %e, "forwarding to the leader failed");
            return message(
                StatusCode::BAD_GATEWAY,
                format!("cannot reach the leader at {leader}: {e}"),
            );
        }
    };
    let status = answer.status();
    let headers = end_to_end(answer.headers());
    let chunks = async_stream::stream! {
        loop {
            match answer.chunk().await {
                Ok(Some(chunk)) => yield Ok(chunk),
                Ok(None) => break,
                Err(e) => {
                    yield Err(e);
                    break;
                }
            }
        }
    };
    let mut closing = closing;
    let closed = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    let mut response = Response::new(Body::from_stream(chunks.take_until(closed)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_are_not_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        headers.insert(header::HOST, HeaderValue::from_static("standby:8080"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.append(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        headers.append(header::ACCEPT, HeaderValue::from_static("application/json"));

        let kept = end_to_end(&headers);

        assert_eq!(kept.len(), 3, "{kept:?}");
        assert_eq!(kept[header::CONTENT_TYPE], "application/json");
        assert_eq!(kept.get_all(header::ACCEPT).iter().count(), 2);
    }
}
