//! `GET /v2/events`: Marathon's event bus as Server-Sent Events.
//!
//! Each event is `event: <eventType>` and `data: <JSON>`; a stream starts
//! with `event_stream_attached`. `event_type=a&event_type=b` keeps only those
//! types. A subscriber that falls more than [`crate::handle::EVENT_BUFFER`]
//! events behind misses the oldest ones and goes on.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::Extensions;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::params::Params;
use super::{Api, client_address, json};

/// The SSE frame of one event.
fn frame(event_type: &str, data: &serde_json::Value) -> Event {
    Event::default().event(event_type).data(data.to_string())
}

/// `GET /v2/events[?event_type=…]`.
pub(crate) async fn stream(
    State(api): State<Api>,
    Query(pairs): Query<Vec<(String, String)>>,
    extensions: Extensions,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let params = Params::new(pairs);
    let wanted: Vec<String> = params.all("event_type").map(str::to_owned).collect();
    let allowed = move |event_type: &str| wanted.is_empty() || wanted.iter().any(|w| w == event_type);
    // Subscribe before anything else so nothing published from now on is missed.
    let mut events = api.handle.subscribe();
    let attached = json::event_stream_attached(&client_address(&extensions), jiff::Timestamp::now());
    let stream = async_stream::stream! {
        if allowed("event_stream_attached") {
            yield Ok(frame("event_stream_attached", &attached));
        }
        loop {
            match events.recv().await {
                Ok(event) => {
                    if allowed(event.event_type()) {
                        yield Ok(frame(event.event_type(), &json::event(&event)));
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "an event stream subscriber fell behind and missed events");
                }
                Err(RecvError::Closed) => break,
            }
        }
    };
    Sse::new(stream).keep_alive(KeepAlive::default())
}
