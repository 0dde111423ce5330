//! Reading a live status stream as a browser's EventSource would.

use reqwest::{Response, StatusCode};
use serde_json::Value;

/// One Server-Sent Event as a client sees it.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

/// Reads an `text/event-stream` response frame by frame, as EventSource
/// would (comments are counted, not returned).
pub struct SseReader {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    pub comments: usize,
}

impl SseReader {
    pub fn new(response: Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK, "stream refused");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "content type"
        );
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event, or `None` once the server ends the stream. Panics if
    /// nothing arrives `within`.
    pub async fn next(&mut self, within: std::time::Duration) -> Option<SseEvent> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = self.parse(&frame) {
                    return Some(event);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("no event within {within:?}"));
            match chunk {
                Some(Ok(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Some(Err(err)) => panic!("stream broke: {err}"),
                None => return None,
            }
        }
    }

    /// Every remaining event until the server ends the stream.
    pub async fn rest(&mut self, within: std::time::Duration) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next(within).await {
            events.push(event);
        }
        events
    }

    fn parse(&mut self, frame: &str) -> Option<SseEvent> {
        let (mut event, mut id, mut data) = (String::from("message"), None, None::<String>);
        for line in frame.lines() {
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event = value.to_owned(),
                "id" => id = Some(value.to_owned()),
                "data" => data = Some(value.to_owned()),
                _ => {}
            }
        }
        let data = data?;
        Some(SseEvent {
            event,
            id,
            data: serde_json::from_str(&data).expect("event data is JSON"),
        })
    }
}
