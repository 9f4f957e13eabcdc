//! A Server-Sent Events client over a raw TCP stream, as `curl -N` is one:
//! HTTP/1.1, the chunked transfer encoding undone as bytes arrive, and the
//! stream split into messages (`id`, `event`, `data`; comments counted).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a response's head may take.
const HEAD_DEADLINE: Duration = Duration::from_secs(20);

/// One SSE message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// `id:` (none when the message has no id).
    pub id: Option<String>,
    /// `event:` (`message` when absent).
    pub event: String,
    /// The `data:` lines, joined with newlines.
    pub data: String,
}

/// An open event stream.
pub struct SseStream {
    /// The connection.
    stream: TcpStream,
    /// Response headers, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Raw bytes read and not yet dechunked.
    raw: Vec<u8>,
    /// Body text not yet split into messages.
    body: String,
    /// Whether the body is chunked.
    chunked: bool,
    /// Comment lines seen (keep-alives).
    pub comments: usize,
    /// Messages read while waiting for a comment.
    read: std::collections::VecDeque<Message>,
}

/// A refusal: the status and the body.
#[derive(Debug)]
pub struct Refused {
    /// HTTP status.
    pub status: u16,
    /// The body text.
    pub body: String,
}

impl SseStream {
    /// `GET path` with `headers`; the stream once the response is 200, or
    /// the refusal.
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Result<Self, Refused>> {
        let mut stream = TcpStream::connect(addr).await?;
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        let head_end = tokio::time::timeout(HEAD_DEADLINE, async {
            loop {
                if let Some(end) = find(&raw, b"\r\n\r\n") {
                    return Ok(end);
                }
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "closed before the response head",
                    ));
                }
                raw.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response head"))??;
        let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
        let rest = raw[head_end + 4..].to_vec();
        let status = head
            .split(' ')
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
            .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let mut this = Self {
            stream,
            headers,
            raw: rest,
            body: String::new(),
            chunked,
            comments: 0,
            read: Default::default(),
        };
        if status != 200 {
            let mut body = Vec::new();
            let _ = tokio::time::timeout(HEAD_DEADLINE, this.stream.read_to_end(&mut body)).await;
            this.raw.extend_from_slice(&body);
            this.dechunk();
            return Ok(Err(Refused {
                status,
                body: this.body,
            }));
        }
        Ok(Ok(this))
    }

    /// A response header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next message; `None` when the stream ended (or `deadline` passed
    /// first: check with [`SseStream::next_before`]).
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.read.pop_front().or_else(|| self.take_message()) {
                return Some(message);
            }
            if !self.read_more().await {
                return None;
            }
        }
    }

    /// Waits until a comment line (a keep-alive) arrives, keeping the
    /// messages read meanwhile for [`SseStream::next`]; false when
    /// `deadline` passed or the stream ended first.
    pub async fn comment_before(&mut self, deadline: Duration) -> bool {
        let seen = self.comments;
        tokio::time::timeout(deadline, async {
            loop {
                while let Some(message) = self.take_message() {
                    self.read.push_back(message);
                }
                if self.comments > seen {
                    return true;
                }
                if !self.read_more().await {
                    return false;
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    async fn read_more(&mut self) -> bool {
        let mut buf = [0u8; 8192];
        match self.stream.read(&mut buf).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                self.dechunk();
                true
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

    /// Moves complete chunks (or everything, unchunked) to the body.
    fn dechunk(&mut self) {
        if !self.chunked {
            self.body.push_str(&String::from_utf8_lossy(&self.raw));
            self.raw.clear();
            return;
        }
        loop {
            let Some(line_end) = find(&self.raw, b"\r\n") else {
                return;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]);
            let Ok(size) =
                usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            else {
                return;
            };
            let start = line_end + 2;
            if self.raw.len() < start + size + 2 {
                return;
            }
            self.body
                .push_str(&String::from_utf8_lossy(&self.raw[start..start + size]));
            self.raw.drain(..start + size + 2);
        }
    }

    /// Takes one complete message from the body (comments are counted).
    fn take_message(&mut self) -> Option<Message> {
        loop {
            let end = self.body.find("\n\n")?;
            let block: String = self.body.drain(..end + 2).collect();
            let mut message = Message {
                event: "message".into(),
                ..Message::default()
            };
            let mut data = Vec::new();
            let mut fields = 0;
            for line in block.lines() {
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                fields += 1;
                match field {
                    "id" => message.id = Some(value.to_string()),
                    "event" => message.event = value.to_string(),
                    "data" => data.push(value.to_string()),
                    _ => {}
                }
            }
            if fields > 0 {
                message.data = data.join("\n");
                return Some(message);
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
