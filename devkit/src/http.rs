//! Plain HTTP/1.1 requests against the relay over a raw TCP stream, with
//! the chunked transfer encoding undone, and Prometheus samples read from
//! `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long connecting may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);
/// How long a whole response may take.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(20);

/// One request (`Connection: close`); returns the status and the body text.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::time::timeout(CONNECT_DEADLINE, TcpStream::connect(addr)).await??;
    let body = body.unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(RESPONSE_DEADLINE, stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// One keep-alive HTTP/1.1 connection for many requests in a row, so that
/// a test sending thousands of them holds one socket instead of leaving
/// thousands in TIME-WAIT (which would use up the machine's ephemeral
/// ports for every other test on loopback). When the relay closes it, the
/// next request opens a new one.
pub struct KeepAlive {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    /// Bytes read past the end of the last response.
    buffered: Vec<u8>,
}

impl KeepAlive {
    /// A connection to `addr`, opened by the first request.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            buffered: Vec::new(),
        }
    }

    /// One request on the connection; returns the status and the body text.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let result = tokio::time::timeout(RESPONSE_DEADLINE, self.exchange(method, path, token))
            .await
            .map_err(std::io::Error::from)
            .and_then(|r| r);
        if result.is_err() {
            self.stream = None;
            self.buffered.clear();
        }
        result
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        if self.stream.is_none() {
            let stream =
                tokio::time::timeout(CONNECT_DEADLINE, TcpStream::connect(self.addr)).await??;
            self.stream = Some(stream);
        }
        let addr = self.addr;
        let stream = self.stream.as_mut().expect("opened above");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let head_end = loop {
            if let Some(at) = find(&self.buffered, b"\r\n\r\n") {
                break at + 4;
            }
            read_more(stream, &mut self.buffered).await?;
        };
        let head = String::from_utf8_lossy(&self.buffered[..head_end]).to_ascii_lowercase();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let closes = header("connection:").is_some_and(|v| v == "close");
        self.buffered.drain(..head_end);
        let body = if header("transfer-encoding:").is_some_and(|v| v == "chunked") {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(at) = find(&self.buffered, b"\r\n") {
                        break at;
                    }
                    read_more(stream, &mut self.buffered).await?;
                };
                let size = String::from_utf8_lossy(&self.buffered[..line_end]);
                let size = usize::from_str_radix(size.trim(), 16)
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
                // The size line, the chunk and the CRLF after it (for the
                // last chunk, the empty trailer line).
                let whole = line_end + 2 + size + 2;
                while self.buffered.len() < whole {
                    read_more(stream, &mut self.buffered).await?;
                }
                body.extend_from_slice(&self.buffered[line_end + 2..line_end + 2 + size]);
                self.buffered.drain(..whole);
                if size == 0 {
                    break;
                }
            }
            String::from_utf8_lossy(&body).into_owned()
        } else {
            let length: usize = header("content-length:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while self.buffered.len() < length {
                read_more(stream, &mut self.buffered).await?;
            }
            let body = String::from_utf8_lossy(&self.buffered[..length]).into_owned();
            self.buffered.drain(..length);
            body
        };
        if closes {
            self.stream = None;
            self.buffered.clear();
        }
        Ok((status, body))
    }
}

/// Where `needle` starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Appends what the stream has next; an error when it has ended.
async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buffer.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Like [`request`] with a JSON body; the response body as JSON, or as a
/// JSON string when it is not JSON.
pub async fn json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> std::io::Result<(u16, Value)> {
    let body = body.map(|b| b.to_string());
    let (status, text) = request(addr, method, path, token, body.as_deref()).await?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value))
}

/// The sum of a Prometheus metric's samples (all label sets) on the
/// relay's `/metrics`, or 0 when it has none or cannot be reached.
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let Ok((_, body)) = request(addr, "GET", "/metrics", None, None).await else {
        return 0.0;
    };
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// Joins the chunks of a chunked body.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn chunks_are_joined() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }

    #[test]
    fn a_truncated_chunk_ends_the_body() {
        assert_eq!(dechunk("3\r\nabc\r\n9\r\nde"), "abc");
    }
}
