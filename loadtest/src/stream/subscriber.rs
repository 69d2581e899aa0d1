//! One live-update subscriber: a raw HTTP/1.1 connection from a chosen loopback source address
//! (so that the backend's per-address cap sees many clients), `GET /api/messages/stream`, and
//! the `id:` of each `message` event with the time it was read.
//!
//! hyper's connection API, as in the `http` mode: one task, one connection, no pool, so the
//! tool costs little per subscriber and every socket is closed when its task ends. The task
//! drives the connection itself and reads its body, so an event wakes one task, not the
//! connection's and then the reader's; the read timeout is one timer per subscriber, moved only
//! when it fires, not a timer set and cancelled per event. With ten thousand subscribers, the
//! tool must not be the delay it measures.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::Connection;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

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

/// One subscriber's HTTP/1.1 connection, driven by the subscriber's own task.
type Driven = Pin<Box<Connection<TokioIo<TcpStream>, Empty<Bytes>>>>;

/// A stream whose head has been answered 200.
pub struct Open {
    body: Incoming,
    connection: Driven,
}

impl std::fmt::Debug for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Open").finish_non_exhaustive()
    }
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
        // The connection is dropped with the body when this returns: the socket closes now.
        read(self.body, self.connection, dial, start, finish).await
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
    let mut connection: Driven = Box::pin(connection);
    let request = Request::get(STREAM_PATH)
        .header(http::header::HOST, &dial.host)
        .header(http::header::ACCEPT, "text/event-stream")
        .body(Empty::<Bytes>::new())
        .map_err(|_| Opened::Failed("request"))?;
    // The connection is driven here until the answer's head, then by `read`.
    let response = tokio::select! {
        response = sender.send_request(request) => response.map_err(|_| Opened::Failed("io"))?,
        _ = connection.as_mut() => return Err(Opened::Failed("io")),
    };
    let status = response.status().as_u16();
    if status == 200 {
        return Ok(Open {
            body: response.into_body(),
            connection,
        });
    }
    let refusal = Limited::new(response.into_body(), REFUSAL_BODY_LIMIT).collect();
    let body = tokio::select! {
        body = refusal => body.map(|body| body.to_bytes()).unwrap_or_default(),
        _ = connection.as_mut() => Bytes::new(),
    };
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|body| body.get("code")?.as_str().map(str::to_owned));
    Err(Opened::Refused { status, code })
}

async fn read(
    mut body: Incoming,
    mut connection: Driven,
    dial: &Dial,
    start: Instant,
    mut finish: watch::Receiver<Finish>,
) -> Received {
    let mut received = Received::default();
    let mut parser = EventParser::default();
    let mut last_read = tokio::time::Instant::now();
    let quiet = tokio::time::sleep(dial.read_timeout);
    tokio::pin!(quiet);
    let mut connection_done = false;
    loop {
        let newest = received.events.last().map(|&(id, _)| id);
        match *finish.borrow_and_update() {
            Finish::Now => break,
            Finish::After(last) if newest.is_some_and(|newest| newest >= last) => break,
            Finish::Running | Finish::After(_) => {}
        }
        let frame = tokio::select! {
            // The connection first: it reads the socket and hands the body its frame, which
            // the next branch then takes in the same wake-up.
            biased;
            _ = connection.as_mut(), if !connection_done => {
                // The body now ends or fails on its own.
                connection_done = true;
                continue;
            }
            frame = body.frame() => frame,
            changed = finish.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
            () = &mut quiet => {
                let due = last_read + dial.read_timeout;
                if tokio::time::Instant::now() >= due {
                    received.ended_early = Some("read-timeout");
                    break;
                }
                quiet.as_mut().reset(due);
                continue;
            }
        };
        let data = match frame {
            None => Err("closed"),
            Some(Err(_)) => Err("io"),
            Some(Ok(frame)) => Ok(frame.into_data().unwrap_or_default()),
        };
        match data {
            Ok(data) => {
                let at = start.elapsed();
                last_read = tokio::time::Instant::now();
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
