//! A minimal blocking HTTP/1.1 POST over [`std::net::TcpStream`], for
//! `http://host:port[/path]` URLs only. There is no TLS on purpose (the
//! compile-time budget and a small audit surface): talk to a local node,
//! or to an http gateway on the node's private network. Connect and
//! exchange timeouts come from `lockstep-limits`; the response is bounded
//! and may come with `Content-Length`, chunked, or until the peer closes.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use lockstep_limits::{
    MAX_RPC_HTTP_HEADER_BYTES, MAX_RPC_RESPONSE_BYTES, RPC_CONNECT_TIMEOUT_MS, RPC_TIMEOUT_MS,
};

use crate::error::ClientError;

/// Room for chunk-size lines on top of the header and body bounds.
const CHUNK_OVERHEAD_BYTES: usize = 64 * 1024;

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    text: String,
    host: String,
    port: u16,
    path: String,
}

impl HttpUrl {
    /// Parses `http://host[:port][/path]` (port 80 by default; an IPv6
    /// host in brackets).
    pub fn parse(url: &str) -> Result<HttpUrl, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if url.len() > 2048 {
            return Err(bad("it is over 2048 bytes"));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("it holds whitespace or control characters"));
        }
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(ClientError::UnsupportedScheme {
                url: url.to_string(),
            });
        }
        if !lower.starts_with("http://") {
            return Err(bad("it does not start with http://"));
        }
        let rest = &url["http://".len()..];
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
            Some(_) => return Err(bad("a query or fragment needs a path before it")),
            None => (rest, "/"),
        };
        if path.contains('#') {
            return Err(bad("it has a fragment"));
        }
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6
                .find(']')
                .ok_or_else(|| bad("an IPv6 host lacks its ]"))?;
            let after = &v6[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return Err(bad("junk after the IPv6 host")),
            };
            (&authority[..end + 2], port)
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("it has no host"));
        }
        let port = match port {
            None => 80,
            Some(text) => text
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
        };
        Ok(HttpUrl {
            text: url.to_string(),
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why bytes are not an HTTP response (sans-IO; the caller adds the URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpParseError {
    Malformed(String),
    TooLarge,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses what has been read of a response: `Ok(None)` while it is
/// incomplete (`eof` says the peer closed: then a body without a length
/// ends there, and anything else incomplete is an error).
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<HttpResponse>, HttpParseError> {
    let malformed = |why: &str| HttpParseError::Malformed(why.to_string());
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_RPC_HTTP_HEADER_BYTES {
            return Err(HttpParseError::TooLarge);
        }
        return if eof {
            Err(malformed("the connection closed inside the headers"))
        } else {
            Ok(None)
        };
    };
    if end > MAX_RPC_HTTP_HEADER_BYTES {
        return Err(HttpParseError::TooLarge);
    }
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| malformed("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(malformed("no HTTP/1.x status line"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| malformed("no status code"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed("a header line without a colon"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let parsed = value
                .parse::<usize>()
                .map_err(|_| malformed("Content-Length is not a number"))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(malformed("two different Content-Length headers"));
            }
            length = Some(parsed);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else {
                return Err(malformed("a transfer encoding other than chunked"));
            }
        }
    }
    let body = &buf[end + 4..];
    if chunked {
        return parse_chunked(body, eof).map(|r| r.map(|r| HttpResponse { status, ..r }));
    }
    match length {
        Some(length) => {
            if length > MAX_RPC_RESPONSE_BYTES {
                return Err(HttpParseError::TooLarge);
            }
            if body.len() >= length {
                Ok(Some(HttpResponse {
                    status,
                    body: body[..length].to_vec(),
                }))
            } else if eof {
                Err(malformed("the connection closed inside the body"))
            } else {
                Ok(None)
            }
        }
        None => {
            if body.len() > MAX_RPC_RESPONSE_BYTES {
                return Err(HttpParseError::TooLarge);
            }
            Ok(eof.then(|| HttpResponse {
                status,
                body: body.to_vec(),
            }))
        }
    }
}

fn parse_chunked(mut rest: &[u8], eof: bool) -> Result<Option<HttpResponse>, HttpParseError> {
    let malformed = |why: &str| HttpParseError::Malformed(why.to_string());
    let incomplete = || {
        if eof {
            Err(malformed("the connection closed inside a chunk"))
        } else {
            Ok(None)
        }
    };
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return if rest.len() > 1024 {
                Err(malformed("a chunk-size line is too long"))
            } else {
                incomplete()
            };
        };
        let line = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| malformed("a chunk-size line is not text"))?;
        let digits = line.split(';').next().unwrap_or("").trim();
        if digits.is_empty() || digits.len() > 8 {
            return Err(malformed("a bad chunk size"));
        }
        let size =
            usize::from_str_radix(digits, 16).map_err(|_| malformed("a chunk size is not hex"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailers (ignored) end with an empty line.
            return if rest.starts_with(b"\r\n") || find(rest, b"\r\n\r\n").is_some() {
                Ok(Some(HttpResponse { status: 0, body }))
            } else {
                incomplete()
            };
        }
        if body.len().saturating_add(size) > MAX_RPC_RESPONSE_BYTES {
            return Err(HttpParseError::TooLarge);
        }
        if rest.len() < size + 2 {
            return incomplete();
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err(malformed("a chunk does not end with CRLF"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// POSTs `body` (JSON) to `url` and returns the response body of a 2xx
/// answer.
pub fn post_json(url: &HttpUrl, body: &[u8]) -> Result<Vec<u8>, ClientError> {
    let text = url.as_str().to_string();
    let unreachable = |reason: String| ClientError::Unreachable {
        url: text.clone(),
        reason,
    };
    let timeout = || ClientError::Timeout {
        url: text.clone(),
        ms: RPC_TIMEOUT_MS,
    };
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<_> = (host, url.port)
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("the host does not resolve: {e}")))?
        .collect();
    let mut last = unreachable("the host resolves to no address".to_string());
    let mut stream = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, Duration::from_millis(RPC_CONNECT_TIMEOUT_MS)) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                last = ClientError::Timeout {
                    url: text.clone(),
                    ms: RPC_CONNECT_TIMEOUT_MS,
                }
            }
            Err(e) => last = unreachable(e.to_string()),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let deadline = Instant::now() + Duration::from_millis(RPC_TIMEOUT_MS);
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let io = |e: std::io::Error| {
        if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) {
            timeout()
        } else {
            ClientError::Io {
                url: text.clone(),
                reason: e.to_string(),
            }
        }
    };
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path, url.host, url.port, body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream
        .set_write_timeout(Some(remaining().ok_or_else(timeout)?))
        .map_err(io)?;
    stream.write_all(&request).map_err(io)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let max = MAX_RPC_HTTP_HEADER_BYTES + MAX_RPC_RESPONSE_BYTES + CHUNK_OVERHEAD_BYTES;
    loop {
        stream
            .set_read_timeout(Some(remaining().ok_or_else(timeout)?))
            .map_err(io)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        let parsed = if buf.len() > max {
            Err(HttpParseError::TooLarge)
        } else {
            parse_response(&buf, n == 0)
        };
        match parsed {
            Ok(None) => continue,
            Ok(Some(response)) if (200..300).contains(&response.status) => {
                return Ok(response.body)
            }
            Ok(Some(response)) => {
                return Err(ClientError::HttpStatus {
                    url: text.clone(),
                    status: response.status,
                    body: String::from_utf8_lossy(&response.body)
                        .chars()
                        .take(200)
                        .collect(),
                })
            }
            Err(HttpParseError::TooLarge) => {
                return Err(ClientError::BadHttp {
                    url: text.clone(),
                    reason: format!(
                        "the response is over the bounds ({MAX_RPC_HTTP_HEADER_BYTES} bytes of headers, {MAX_RPC_RESPONSE_BYTES} of body)"
                    ),
                })
            }
            Err(HttpParseError::Malformed(reason)) => {
                return Err(ClientError::BadHttp {
                    url: text.clone(),
                    reason,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn urls() {
        let url = HttpUrl::parse("http://127.0.0.1:8545").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("127.0.0.1", 8545, "/")
        );
        let url = HttpUrl::parse("http://gateway.local/rpc/v1").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("gateway.local", 80, "/rpc/v1")
        );
        let url = HttpUrl::parse("http://[::1]:8545/").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("[::1]", 8545));
        assert!(matches!(
            HttpUrl::parse("https://mainnet.example"),
            Err(ClientError::UnsupportedScheme { .. })
        ));
        for bad in [
            "",
            "localhost:8545",
            "http://",
            "http://:80",
            "http://host:0",
            "http://host:99999",
            "http://host:x",
            "http://a b",
            "http://u:p@host",
            "ftp://host",
            "http://[::1",
        ] {
            assert!(
                matches!(HttpUrl::parse(bad), Err(ClientError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn responses() {
        let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            parse_response(whole, false).unwrap().unwrap().body,
            b"hello"
        );
        assert_eq!(
            parse_response(&whole[..whole.len() - 1], false).unwrap(),
            None
        );
        assert!(parse_response(&whole[..whole.len() - 1], true).is_err());
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n";
        let response = parse_response(chunked, false).unwrap().unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"hello"[..])
        );
        assert_eq!(
            parse_response(&chunked[..chunked.len() - 2], false).unwrap(),
            None
        );
        let closed = b"HTTP/1.0 500 Oops\r\n\r\nbroken";
        assert_eq!(parse_response(closed, false).unwrap(), None);
        assert_eq!(
            parse_response(closed, true).unwrap().unwrap(),
            HttpResponse {
                status: 500,
                body: b"broken".to_vec()
            }
        );
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_RPC_RESPONSE_BYTES + 1
        );
        assert_eq!(
            parse_response(huge.as_bytes(), false),
            Err(HttpParseError::TooLarge)
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", false).is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).is_err()
        );
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhelXX",
            false
        )
        .is_err());
    }

    #[test]
    fn nothing_listening_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        assert!(matches!(
            post_json(&url, b"{}"),
            Err(ClientError::Unreachable { .. })
        ));
    }

    #[test]
    fn a_local_server_answers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while find(&seen, b"{}").is_none() {
                let n = socket.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                )
                .unwrap();
            String::from_utf8(seen).unwrap()
        });
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/rpc")).unwrap();
        assert_eq!(post_json(&url, b"{}").unwrap(), b"ok");
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /rpc HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("Content-Length: 2\r\n"), "{request}");
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), eof in any::<bool>()) {
            let _ = parse_response(&data, eof);
            let mut framed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            framed.extend_from_slice(&data);
            let _ = parse_response(&framed, eof);
        }

        #[test]
        fn url_parse_never_panics(text in "\\PC{0,60}") {
            let _ = HttpUrl::parse(&text);
            let _ = HttpUrl::parse(&format!("http://{text}"));
        }
    }
}
