//! A Server-Sent Events client over a plain TCP socket, as `curl -N` is
//! one, for the relay's `GET /v1/sse`: one HTTP/1.1 request, the response
//! head, a body that may be chunked (decoded as bytes arrive), and the
//! `text/event-stream` format (fields `id`, `event`, `data`; comments
//! counted; a blank line ends each message). Tests read message by message;
//! the bench's client processes read in batches, one task per stream.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Bytes read at once.
const READ: usize = 16 * 1024;
/// How long connecting and the response head may take each.
const HEAD_DEADLINE: Duration = Duration::from_secs(20);

/// One SSE message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// `id:` (none when the message has no id).
    pub id: Option<String>,
    /// `event:` (`message` when absent).
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// A refusal: the status and the body.
#[derive(Debug)]
pub struct Refused {
    /// HTTP status.
    pub status: u16,
    /// The body text.
    pub body: String,
}

/// An open event stream.
pub struct SseStream {
    /// The connection.
    tcp: TcpStream,
    /// Response headers, with lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The body's transfer coding.
    body: Body,
    /// The event-stream format.
    parser: Parser,
    /// Bytes read and not yet decoded.
    buf: Vec<u8>,
    /// Messages decoded and not yet returned by [`SseStream::next`].
    read: VecDeque<Message>,
}

impl SseStream {
    /// `GET path` with extra request `headers`; the stream once the
    /// response is 200, or the refusal with its body.
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Result<Self, Refused>> {
        Self::open_from(addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED), path, headers).await
    }

    /// Like [`SseStream::open`], from the local address `bind` (load
    /// generators spread their sockets over several).
    pub async fn open_from(
        addr: SocketAddr,
        bind: IpAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Result<Self, Refused>> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(bind, 0))?;
        let mut tcp = tokio::time::timeout(HEAD_DEADLINE, socket.connect(addr))
            .await
            .map_err(|_| timed_out("connect"))??;
        tcp.set_nodelay(true)?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes()).await?;
        let mut head = Vec::with_capacity(1024);
        let end = loop {
            if let Some(at) = find(&head, b"\r\n\r\n") {
                break at;
            }
            if head.len() > MAX_HEAD {
                return Err(invalid(format!("response head over {MAX_HEAD} bytes")));
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(HEAD_DEADLINE, tcp.read(&mut chunk))
                .await
                .map_err(|_| timed_out("the response head"))??;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the connection ended before a response",
                ));
            }
            head.extend_from_slice(&chunk[..n]);
        };
        let rest = head.split_off(end + 4);
        let head = String::from_utf8_lossy(&head).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = head
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
        let stream = Self {
            tcp,
            headers,
            body: Body::new(chunked),
            parser: Parser::default(),
            buf: rest,
            read: VecDeque::new(),
        };
        if status != 200 {
            return Ok(Err(stream.refused(status).await));
        }
        Ok(Ok(stream))
    }

    /// A response header's value (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Comment lines seen so far (keep-alives).
    pub fn comments(&self) -> usize {
        self.parser.comments
    }

    /// Reads once (unless bytes are already waiting) and appends the
    /// messages that completes to `out`; false at the end of the stream.
    pub async fn read_batch(&mut self, out: &mut Vec<Message>) -> std::io::Result<bool> {
        if self.buf.is_empty() {
            let mut chunk = vec![0u8; READ];
            let n = self.tcp.read(&mut chunk).await?;
            if n == 0 {
                return Ok(false);
            }
            chunk.truncate(n);
            self.buf = chunk;
        }
        let raw = std::mem::take(&mut self.buf);
        let mut plain = Vec::with_capacity(raw.len());
        let more = self.body.feed(&raw, &mut plain)?;
        self.parser.feed(&plain, out);
        Ok(more)
    }

    /// The next message; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.read.pop_front() {
                return Some(message);
            }
            if !self.read_more().await {
                // What the last read completed, if anything.
                return self.read.pop_front();
            }
        }
    }

    /// The next message within `deadline`: `Ok(None)` when the stream
    /// ended, `Err(())` when the deadline passed first.
    pub async fn next_before(&mut self, deadline: Duration) -> Result<Option<Message>, ()> {
        tokio::time::timeout(deadline, self.next())
            .await
            .map_err(|_| ())
    }

    /// Waits until a comment line (a keep-alive) arrives, keeping the
    /// messages read meanwhile for [`SseStream::next`]; false when
    /// `deadline` passed or the stream ended first.
    pub async fn comment_before(&mut self, deadline: Duration) -> bool {
        let seen = self.comments();
        tokio::time::timeout(deadline, async {
            while self.comments() == seen {
                if !self.read_more().await {
                    return false;
                }
            }
            true
        })
        .await
        .unwrap_or(false)
    }

    async fn read_more(&mut self) -> bool {
        let mut batch = Vec::new();
        let more = self.read_batch(&mut batch).await.unwrap_or(false);
        self.read.extend(batch);
        more
    }

    /// The body of a refusal, read until the connection ends.
    async fn refused(mut self, status: u16) -> Refused {
        let mut body = Vec::new();
        let _ = self.body.feed(&std::mem::take(&mut self.buf), &mut body);
        let _ = tokio::time::timeout(HEAD_DEADLINE, async {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = self.tcp.read(&mut chunk).await {
                if !matches!(self.body.feed(&chunk[..n], &mut body), Ok(true)) {
                    break;
                }
            }
        })
        .await;
        Refused {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out"))
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// The response body: as is, or `Transfer-Encoding: chunked` decoded.
#[derive(Debug)]
enum Body {
    Plain,
    Chunked(Chunk),
}

#[derive(Debug)]
enum Chunk {
    /// Reading the size line (hex digits, maybe extensions).
    Size(Vec<u8>),
    /// This many data bytes to go.
    Data(usize),
    /// The CRLF after a chunk's data: this many bytes to skip.
    End(usize),
    /// The last chunk was read.
    Done,
}

impl Body {
    fn new(chunked: bool) -> Self {
        if chunked {
            Self::Chunked(Chunk::Size(Vec::new()))
        } else {
            Self::Plain
        }
    }

    /// Appends the body bytes in `raw` to `out`; false once the body ended.
    fn feed(&mut self, mut raw: &[u8], out: &mut Vec<u8>) -> std::io::Result<bool> {
        let Self::Chunked(state) = self else {
            out.extend_from_slice(raw);
            return Ok(true);
        };
        while !raw.is_empty() {
            match state {
                Chunk::Size(line) => {
                    let Some(at) = raw.iter().position(|b| *b == b'\n') else {
                        line.extend_from_slice(raw);
                        break;
                    };
                    line.extend_from_slice(&raw[..at]);
                    raw = &raw[at + 1..];
                    let text = String::from_utf8_lossy(line);
                    let digits = text.split(';').next().unwrap_or_default().trim();
                    let size = usize::from_str_radix(digits, 16)
                        .map_err(|_| invalid(format!("bad chunk size {text:?}")))?;
                    *state = if size == 0 {
                        Chunk::Done
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    let take = (*left).min(raw.len());
                    out.extend_from_slice(&raw[..take]);
                    raw = &raw[take..];
                    *left -= take;
                    if *left == 0 {
                        *state = Chunk::End(2);
                    }
                }
                Chunk::End(left) => {
                    let take = (*left).min(raw.len());
                    raw = &raw[take..];
                    *left -= take;
                    if *left == 0 {
                        *state = Chunk::Size(Vec::new());
                    }
                }
                Chunk::Done => return Ok(false),
            }
        }
        Ok(!matches!(state, Chunk::Done))
    }
}

/// The `text/event-stream` format, fed bytes as they come.
#[derive(Debug, Default)]
struct Parser {
    /// The line being read.
    line: Vec<u8>,
    /// The message being read.
    current: Message,
    /// Whether it has a `data` field yet.
    has_data: bool,
    /// Comment lines seen.
    comments: usize,
}

impl Parser {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Message>) {
        for &b in bytes {
            if b == b'\n' {
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                let line = std::mem::take(&mut self.line);
                self.line(&line, out);
            } else {
                self.line.push(b);
            }
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<Message>) {
        if line.is_empty() {
            let message = std::mem::take(&mut self.current);
            if std::mem::take(&mut self.has_data) {
                out.push(Message {
                    event: if message.event.is_empty() {
                        "message".into()
                    } else {
                        message.event
                    },
                    ..message
                });
            }
            return;
        }
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.current.event = value.into_owned(),
            b"id" => self.current.id = Some(value.into_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_decoded_across_reads() {
        let mut body = Body::new(true);
        let mut out = Vec::new();
        let wire = b"5\r\nhello\r\n7;x=1\r\n, world\r\n0\r\n\r\n";
        for piece in wire.chunks(3) {
            body.feed(piece, &mut out).unwrap();
        }
        assert_eq!(out, b"hello, world");
        assert!(matches!(body, Body::Chunked(Chunk::Done)));
    }

    #[test]
    fn messages_are_split_on_blank_lines_and_comments_counted() {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        let stream = ": keep-alive\n\nid: 7\r\nevent: message-sent\r\ndata: {\"seq\":7,\r\n\r\nid: 8\nevent: message-received\ndata: {\"a\":1}\ndata: {\"b\":2}\n\nevent: gap\ndata: {}\n\n";
        for piece in stream.as_bytes().chunks(5) {
            parser.feed(piece, &mut out);
        }
        assert_eq!(
            out,
            vec![
                Message {
                    id: Some("7".into()),
                    event: "message-sent".into(),
                    data: "{\"seq\":7,".into()
                },
                Message {
                    id: Some("8".into()),
                    event: "message-received".into(),
                    data: "{\"a\":1}\n{\"b\":2}".into()
                },
                Message {
                    id: None,
                    event: "gap".into(),
                    data: "{}".into()
                },
            ]
        );
        assert_eq!(parser.comments, 1);
    }
}
