//! One live-update subscriber: a raw HTTP/1.1 connection from a chosen loopback source address
//! (so that the backend's per-address cap sees many clients), `GET /api/messages/stream`, and
//! the `id:` of each `message` event with the time it was read.
//!
//! hyper's connection API, as in the `http` mode: one task, one connection, no pool, so the
//! tool costs little per subscriber and every socket is closed when its task ends.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::stream::tally::Received;

/// The stream's path on a backend.
pub const STREAM_PATH: &str = "/api/messages/stream";

/// A refusal's body is read up to this size; an error body is far smaller.
const REFUSAL_BODY_LIMIT: usize = 16 * 1024;

/// When a subscriber stops reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Messages are still being posted: read on.
    Running,
    /// Every message is posted: stop once this id (the last acknowledged) has been read.
    After(u64),
    /// Stop now (the grace period is over, or nothing was acknowledged).
    Now,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Dial {
    /// The backend's address (loopback).
    pub target: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// Time allowed for connecting and the answer's head.
    pub connect_timeout: Duration,
    /// Time allowed between two reads on an open stream (keep-alive comments included).
    pub read_timeout: Duration,
}

/// How opening a subscriber ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// 200: the stream is open.
    Open,
    /// Refused with this status and, when the body is an error body, its `code`.
    Refused {
        /// The answer's status.
        status: u16,
        /// The error body's `code`, e.g. `too-many-streams`.
        code: Option<String>,
    },
    /// No answer: `connect`, `bind`, `timeout` or `io`.
    Failed(&'static str),
}

/// A stream whose head has been answered 200.
#[derive(Debug)]
pub struct Open {
    body: Incoming,
    connection: JoinHandle<()>,
}

/// Connects from `source` and asks for the stream, within the dial's connect timeout.
pub async fn open_stream(dial: &Dial, source: IpAddr) -> Result<Open, Opened> {
    tokio::time::timeout(dial.connect_timeout, open(dial, source))
        .await
        .unwrap_or(Err(Opened::Failed("timeout")))
}

impl Open {
    /// Reads events until `finish` says so or the stream ends; `start` is the run's clock.
    pub async fn read(
        self,
        dial: &Dial,
        start: Instant,
        finish: watch::Receiver<Finish>,
    ) -> Received {
        let received = read(self.body, dial, start, finish).await;
        // The body is gone; ending the connection's task closes the socket now, not at exit.
        self.connection.abort();
        received
    }
}

async fn open(dial: &Dial, source: IpAddr) -> Result<Open, Opened> {
    let socket = match dial.target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|_| Opened::Failed("socket"))?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|_| Opened::Failed("bind"))?;
    let stream = socket
        .connect(dial.target)
        .await
        .map_err(|_| Opened::Failed("connect"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Opened::Failed("connect"))?;
    let connection = tokio::spawn(async move {
        // Ends when the peer closes or the task is aborted; either is normal here.
        let _ = connection.await;
    });
    let request = Request::get(STREAM_PATH)
        .header(http::header::HOST, &dial.host)
        .header(http::header::ACCEPT, "text/event-stream")
        .body(Empty::<Bytes>::new())
        .map_err(|_| Opened::Failed("request"))?;
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(_) => {
            connection.abort();
            return Err(Opened::Failed("io"));
        }
    };
    let status = response.status().as_u16();
    if status == 200 {
        return Ok(Open {
            body: response.into_body(),
            connection,
        });
    }
    let body = Limited::new(response.into_body(), REFUSAL_BODY_LIMIT)
        .collect()
        .await
        .map(|body| body.to_bytes())
        .unwrap_or_default();
    connection.abort();
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|body| body.get("code")?.as_str().map(str::to_owned));
    Err(Opened::Refused { status, code })
}

async fn read(
    mut body: Incoming,
    dial: &Dial,
    start: Instant,
    mut finish: watch::Receiver<Finish>,
) -> Received {
    let mut received = Received::default();
    let mut parser = EventParser::default();
    loop {
        let newest = received.events.last().map(|&(id, _)| id);
        match *finish.borrow_and_update() {
            Finish::Now => break,
            Finish::After(last) if newest.is_some_and(|newest| newest >= last) => break,
            Finish::Running | Finish::After(_) => {}
        }
        let frame = tokio::select! {
            changed = finish.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
            frame = tokio::time::timeout(dial.read_timeout, body.frame()) => frame,
        };
        let data = match frame {
            Err(_) => Err("read-timeout"),
            Ok(None) => Err("closed"),
            Ok(Some(Err(_))) => Err("io"),
            Ok(Some(Ok(frame))) => Ok(frame.into_data().unwrap_or_default()),
        };
        match data {
            Ok(data) => {
                let at = start.elapsed();
                parser.feed(&data, |id| received.events.push((id, at)));
            }
            Err(kind) => {
                received.ended_early = Some(kind);
                break;
            }
        }
    }
    received
}

/// Splits a `text/event-stream` into events, keeping only each `message` event's `id`.
#[derive(Debug, Default)]
pub struct EventParser {
    line: Vec<u8>,
    id: Option<u64>,
    other_event: bool,
}

impl EventParser {
    /// Feeds the next bytes; `event` is called with the id of each complete `message` event.
    pub fn feed(&mut self, bytes: &[u8], mut event: impl FnMut(u64)) {
        for &byte in bytes {
            if byte != b'\n' {
                self.line.push(byte);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.is_empty() {
                if let Some(id) = self.id.take()
                    && !self.other_event
                {
                    event(id);
                }
                self.other_event = false;
            } else if let Some(id) = line.strip_prefix(b"id:") {
                self.id = std::str::from_utf8(id)
                    .ok()
                    .and_then(|id| id.trim().parse().ok());
            } else if let Some(name) = line.strip_prefix(b"event:") {
                self.other_event = name.trim_ascii() != b"message";
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(chunks: &[&str]) -> Vec<u64> {
        let mut parser = EventParser::default();
        let mut ids = Vec::new();
        for chunk in chunks {
            parser.feed(chunk.as_bytes(), |id| ids.push(id));
        }
        ids
    }

    #[test]
    fn message_events_give_their_ids_even_when_split_across_reads() {
        assert_eq!(
            ids(&[
                "event: message\nid: 7\ndata: {\"id\":7}\n\n: keep-alive\n\nevent: mess",
                "age\r\nid: 8\r\ndata: {}\r\n",
                "\r\n"
            ]),
            vec![7, 8]
        );
    }

    #[test]
    fn an_event_of_another_kind_or_without_an_id_is_not_a_message() {
        assert_eq!(
            ids(&["event: other\nid: 3\ndata: x\n\ndata: y\n\nid: 4\ndata: z\n\n"]),
            vec![4]
        );
    }
}
