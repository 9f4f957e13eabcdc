//! A small Server-Sent Events client over a plain TCP socket, enough for the
//! relay's `GET /v1/sse`: one HTTP/1.1 request, the response head, a body
//! that may be chunked, and the `text/event-stream` format (fields `id`,
//! `event`, `data`, comments, a blank line ending each message). One task
//! per stream, so one client process holds many of them.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Bytes read at once.
const READ: usize = 16 * 1024;

/// One SSE message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `id:` (the stored event's seq), when sent.
    pub id: Option<String>,
    /// `event:` (`message` when absent).
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// An open event stream.
pub struct Stream {
    tcp: TcpStream,
    body: Body,
    parser: Parser,
    buf: Vec<u8>,
}

/// Opens `GET {path}` from `bind` and reads the response head; fails
/// unless it is `200` with `text/event-stream`.
pub async fn open(
    addr: SocketAddr,
    bind: std::net::IpAddr,
    path_and_query: &str,
) -> anyhow::Result<Stream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(bind, 0))?;
    let mut tcp = tokio::time::timeout(Duration::from_secs(10), socket.connect(addr))
        .await
        .context("connect timed out")??;
    tcp.set_nodelay(true)?;
    let request = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(1024);
    let end = loop {
        if let Some(at) = find(&head, b"\r\n\r\n") {
            break at;
        }
        if head.len() > MAX_HEAD {
            bail!("response head larger than {MAX_HEAD} bytes");
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut chunk))
            .await
            .context("no response within 20 s")??;
        if n == 0 {
            bail!("the connection ended before a response");
        }
        head.extend_from_slice(&chunk[..n]);
    };
    let rest = head.split_off(end + 4);
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        let body = String::from_utf8_lossy(&rest);
        bail!("HTTP {status}: {}", body.trim());
    }
    let header = |name: &str| {
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_ascii_lowercase())
        })
    };
    if !header("content-type").is_some_and(|t| t.starts_with("text/event-stream")) {
        bail!("not an event stream: {head}");
    }
    let chunked = header("transfer-encoding").is_some_and(|t| t.contains("chunked"));
    let mut stream = Stream {
        tcp,
        body: Body::new(chunked),
        parser: Parser::default(),
        buf: Vec::with_capacity(READ),
    };
    stream.buf = rest;
    Ok(stream)
}

impl Stream {
    /// Reads once (unless bytes are already waiting) and returns the
    /// messages completed by what was read; `None` at the end of the stream.
    pub async fn next(&mut self, out: &mut Vec<Event>) -> anyhow::Result<Option<()>> {
        if self.buf.is_empty() {
            let mut chunk = vec![0u8; READ];
            let n = self.tcp.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            chunk.truncate(n);
            self.buf = chunk;
        }
        let raw = std::mem::take(&mut self.buf);
        let mut plain = Vec::with_capacity(raw.len());
        let more = self.body.feed(&raw, &mut plain)?;
        self.parser.feed(&plain, out);
        Ok(more.then_some(()))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
    fn feed(&mut self, mut raw: &[u8], out: &mut Vec<u8>) -> anyhow::Result<bool> {
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
                        .with_context(|| format!("bad chunk size {text:?}"))?;
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
    line: Vec<u8>,
    current: Event,
    has_data: bool,
}

impl Parser {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
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

    fn line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            let event = std::mem::take(&mut self.current);
            if std::mem::take(&mut self.has_data) {
                out.push(Event {
                    event: if event.event.is_empty() {
                        "message".into()
                    } else {
                        event.event
                    },
                    ..event
                });
            }
            return;
        }
        if line[0] == b':' {
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
    fn messages_are_split_on_blank_lines() {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        let stream = ": keep-alive\n\nid: 7\r\nevent: message-sent\r\ndata: {\"seq\":7,\r\n\r\nid: 8\nevent: message-received\ndata: {\"a\":1}\ndata: {\"b\":2}\n\nevent: gap\ndata: {}\n\n";
        for piece in stream.as_bytes().chunks(5) {
            parser.feed(piece, &mut out);
        }
        assert_eq!(
            out,
            vec![
                Event {
                    id: Some("7".into()),
                    event: "message-sent".into(),
                    data: "{\"seq\":7,".into()
                },
                Event {
                    id: Some("8".into()),
                    event: "message-received".into(),
                    data: "{\"a\":1}\n{\"b\":2}".into()
                },
                Event {
                    id: None,
                    event: "gap".into(),
                    data: "{}".into()
                },
            ]
        );
    }
}
