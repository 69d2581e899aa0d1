//! One live-update subscriber: a raw HTTP/1.1 connection from a chosen loopback source address
//! (so that the backend's per-address cap sees many clients), `GET /api/messages/stream`, and
//! the `id:` of each `message` event with the time it was read.
//!
//! The request is written and the answer read by hand, on the subscriber's own task: one read
//! per wake-up into a buffer kept for the stream, the chunked framing and the event lines
//! parsed in place, and a read timeout that is one timer per subscriber, moved only when it
//! fires. With ten thousand subscribers on the cores the backend also runs on, the tool must
//! not be the delay it measures: hyper's client (a connection future, a body channel and a
//! frame per event) cost about as much CPU per delivery as the backend's own sending did
//! (issue 17).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::stream::tally::Received;

/// The stream's path on a backend.
pub const STREAM_PATH: &str = "/api/messages/stream";

/// A refusal's body is read up to this size; an error body is far smaller.
const REFUSAL_BODY_LIMIT: usize = 16 * 1024;

/// The longest answer head read; the backend's are a few hundred bytes.
const HEAD_LIMIT: usize = 16 * 1024;

/// Bytes read at most per read of an open stream.
const READ_BUFFER: usize = 8 * 1024;

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
    stream: TcpStream,
    /// What was read past the head.
    rest: Vec<u8>,
    /// The body is in chunked framing (else it runs to the connection's end).
    chunked: bool,
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
        // The socket is dropped when this returns: it closes now.
        read(self, dial, start, finish).await
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
    let mut stream = socket
        .connect(dial.target)
        .await
        .map_err(|_| Opened::Failed("connect"))?;
    let _ = stream.set_nodelay(true);
    let request = format!(
        "GET {STREAM_PATH} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        dial.host
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|_| Opened::Failed("io"))?;
    let mut read = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(end) = find(&read, b"\r\n\r\n") {
            break end + 4;
        }
        if read.len() > HEAD_LIMIT || !fill(&mut stream, &mut read).await? {
            return Err(Opened::Failed("io"));
        }
    };
    let head = Head::parse(&read[..head_end]).ok_or(Opened::Failed("io"))?;
    let rest = read.split_off(head_end);
    if head.status == 200 {
        return Ok(Open {
            stream,
            rest,
            chunked: head.chunked,
        });
    }
    let body = refusal_body(&mut stream, rest, &head).await;
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|body| body.get("code")?.as_str().map(str::to_owned));
    Err(Opened::Refused {
        status: head.status,
        code,
    })
}

/// Reads more of `stream` onto `into`; false at its end.
async fn fill(stream: &mut TcpStream, into: &mut Vec<u8>) -> Result<bool, Opened> {
    let mut buffer = [0_u8; 4096];
    let read = stream
        .read(&mut buffer)
        .await
        .map_err(|_| Opened::Failed("io"))?;
    into.extend_from_slice(&buffer[..read]);
    Ok(read > 0)
}

/// A refusal's body (an error body of `content-length` bytes, or chunked), at most
/// [`REFUSAL_BODY_LIMIT`]; what could be read if the connection ends first.
async fn refusal_body(stream: &mut TcpStream, mut read: Vec<u8>, head: &Head) -> Vec<u8> {
    let wanted = head.content_length.unwrap_or(REFUSAL_BODY_LIMIT);
    let wanted = wanted.min(REFUSAL_BODY_LIMIT);
    while read.len() < wanted && !(head.chunked && find(&read, b"0\r\n\r\n").is_some()) {
        if !matches!(fill(stream, &mut read).await, Ok(true)) {
            break;
        }
    }
    if !head.chunked {
        read.truncate(wanted);
        return read;
    }
    let mut body = Vec::new();
    ChunkedDecoder::default().feed(&read, |payload| body.extend_from_slice(payload));
    body
}

/// What the stream needs of an answer's head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    chunked: bool,
    content_length: Option<usize>,
}

impl Head {
    /// The status line and the two framing headers; `None` for something not HTTP/1.x.
    fn parse(head: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(head).ok()?;
        let mut lines = text.split("\r\n");
        let mut status_line = lines.next()?.split(' ');
        if !status_line.next()?.starts_with("HTTP/1.") {
            return None;
        }
        let status = status_line.next()?.parse().ok()?;
        let (mut chunked, mut content_length) = (false, None);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().ok();
            }
        }
        Some(Self {
            status,
            chunked,
            content_length,
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

async fn read(
    open: Open,
    dial: &Dial,
    start: Instant,
    mut finish: watch::Receiver<Finish>,
) -> Received {
    let Open {
        mut stream,
        rest,
        chunked,
    } = open;
    let mut received = Received::default();
    let mut parser = EventParser::default();
    let mut framing = chunked.then(ChunkedDecoder::default);
    let mut take = |bytes: &[u8], received: &mut Received, parser: &mut EventParser| {
        let at = start.elapsed();
        let mut events = |payload: &[u8]| parser.feed(payload, |id| received.events.push((id, at)));
        match framing.as_mut() {
            Some(decoder) => decoder.feed(bytes, &mut events),
            None => events(bytes),
        }
    };
    take(&rest, &mut received, &mut parser);
    let mut buffer = vec![0_u8; READ_BUFFER];
    let mut last_read = tokio::time::Instant::now();
    let quiet = tokio::time::sleep(dial.read_timeout);
    tokio::pin!(quiet);
    loop {
        let newest = received.events.last().map(|&(id, _)| id);
        match *finish.borrow_and_update() {
            Finish::Now => break,
            Finish::After(last) if newest.is_some_and(|newest| newest >= last) => break,
            Finish::Running | Finish::After(_) => {}
        }
        let read = tokio::select! {
            biased;
            read = stream.read(&mut buffer) => read,
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
        match read {
            Ok(0) => {
                received.ended_early = Some("closed");
                break;
            }
            Ok(n) => {
                last_read = tokio::time::Instant::now();
                take(&buffer[..n], &mut received, &mut parser);
            }
            Err(_) => {
                received.ended_early = Some("io");
                break;
            }
        }
    }
    received
}

/// Takes the payload out of HTTP/1.1 chunked framing, whatever the reads' boundaries.
#[derive(Debug, Default)]
struct ChunkedDecoder {
    state: Chunk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk's size line: hex digits, then maybe an extension, up to its end.
    Size { size: u64, digits_done: bool },
    /// This many payload bytes to go.
    Data { left: u64 },
    /// The line end after a chunk's payload.
    DataEnd,
    /// The last (empty) chunk was read: nothing more is payload.
    Done,
}

impl Default for Chunk {
    fn default() -> Self {
        Self::Size {
            size: 0,
            digits_done: false,
        }
    }
}

impl ChunkedDecoder {
    fn feed(&mut self, mut bytes: &[u8], mut payload: impl FnMut(&[u8])) {
        while let Some((&byte, rest)) = bytes.split_first() {
            self.state = match self.state {
                Chunk::Size { size, digits_done } => {
                    bytes = rest;
                    match (byte, char::from(byte).to_digit(16)) {
                        (b'\n', _) if size == 0 => Chunk::Done,
                        (b'\n', _) => Chunk::Data { left: size },
                        (_, Some(digit)) if !digits_done => Chunk::Size {
                            size: size.saturating_mul(16).saturating_add(u64::from(digit)),
                            digits_done,
                        },
                        _ => Chunk::Size {
                            size,
                            digits_done: true,
                        },
                    }
                }
                Chunk::Data { left } => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    payload(&bytes[..take]);
                    bytes = &bytes[take..];
                    match left.saturating_sub(take as u64) {
                        0 => Chunk::DataEnd,
                        left => Chunk::Data { left },
                    }
                }
                Chunk::DataEnd => {
                    bytes = rest;
                    if byte == b'\n' {
                        Chunk::default()
                    } else {
                        Chunk::DataEnd
                    }
                }
                Chunk::Done => return,
            };
        }
    }
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

    fn decoded(chunks: &[&str]) -> String {
        let mut decoder = ChunkedDecoder::default();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.feed(chunk.as_bytes(), |payload| out.extend_from_slice(payload));
        }
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn chunked_framing_is_removed_whatever_the_reads_boundaries() {
        let framed = "5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nafter";
        let whole = decoded(&[framed]);
        assert_eq!(whole, "helloabcdefghijklmnopqrstuvwxyz");
        // Every split point, byte by byte included.
        for cut in 0..framed.len() {
            assert_eq!(
                decoded(&[&framed[..cut], &framed[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        let bytes: Vec<String> = framed.chars().map(String::from).collect();
        let single: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(decoded(&single), whole);
    }

    #[test]
    fn a_head_gives_its_status_and_framing() {
        let head = Head::parse(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(
            head,
            Some(Head {
                status: 200,
                chunked: true,
                content_length: None
            })
        );
        let refused =
            Head::parse(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 61\r\n\r\n");
        assert_eq!(
            refused,
            Some(Head {
                status: 503,
                chunked: false,
                content_length: Some(61)
            })
        );
        assert_eq!(Head::parse(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
    }

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
