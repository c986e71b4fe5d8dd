//! One connection's requests, read on the connection's own thread.
//!
//! astrbot patches (PATCHES.md): P3 bounds the head (each line, the number of fields, the
//! whole head, and the time to read it) and answers 431 or 408; P4 refuses bytes that are
//! not HTTP at the first such byte (a TLS ClientHello gets its 400 at once instead of a
//! hang) and ambiguous body framing; P1 skips a body the application left unread, up to
//! `Limits::drain_limit`, else closes; P6 parses the next request only once the previous
//! response is complete, so a connection never queues more than one request. Every error
//! this layer answers itself is a JSON envelope followed by a lingering close, so the
//! answer is not destroyed by a reset while the peer is still sending.

use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ascii::AsciiString;

use crate::common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
use crate::util::{
    SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder, Socket, SocketReader, SocketWriter,
    Tracked,
};
use crate::Request;

type Source = BufReader<SocketReader>;
type Sink = BufWriter<SocketWriter>;

pub struct ClientConnection {
    remote_addr: Option<SocketAddr>,
    socket: Arc<Socket>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<Source>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<Sink>,

    // Reader to read the next header from
    next_header_source: SequentialReader<Source>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // no request has been read yet
    first: bool,
}

/// Why no request could be read.
#[derive(Debug, PartialEq, Eq)]
enum ReadError {
    /// Answer this status and message, then close.
    Refuse(u16, &'static str),
    /// Close without an answer: the peer left, or sent nothing before the idle deadline.
    Close,
}

/// Writes one of this layer's own answers: a JSON error envelope, `Connection: close`.
pub(crate) fn write_error(writer: &mut dyn Write, status: u16, message: &str) {
    let body = format!("{{\"status\":\"error\",\"message\":\"{}\"}}", message);
    let retry = if status == 503 { "Retry-After: 1\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         X-Content-Type-Options: nosniff\r\nConnection: close\r\n{}\r\n",
        status,
        StatusCode(status).default_reason_phrase(),
        body.len(),
        retry
    );
    let _ = writer
        .write_all(head.as_bytes())
        .and_then(|_| writer.write_all(body.as_bytes()))
        .and_then(|_| writer.flush());
}

/// A `tchar` of RFC 9110: what method names and header field names are made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl ClientConnection {
    pub(crate) fn new(socket: Arc<Socket>) -> ClientConnection {
        let remote_addr = socket.peer_addr().ok().flatten();
        let reader = BufReader::with_capacity(1024, SocketReader(socket.clone()));
        let writer = BufWriter::with_capacity(1024, SocketWriter(socket.clone()));
        let mut source = SequentialReaderBuilder::new(reader);
        let next_header_source = source.next_reader();
        ClientConnection {
            remote_addr,
            socket,
            source,
            sink: SequentialWriterBuilder::new(writer),
            next_header_source,
            no_more_requests: false,
            first: true,
        }
    }

    /// One byte of the head; `any` says whether a byte of this head came before.
    fn head_byte(&mut self, any: bool) -> Result<u8, ReadError> {
        let mut byte = [0u8; 1];
        match self.next_header_source.read(&mut byte) {
            Ok(1) => Ok(byte[0]),
            Ok(_) => Err(ReadError::Close),
            Err(e) if e.kind() == ErrorKind::TimedOut && any => {
                Err(ReadError::Refuse(408, "Request head not received in time"))
            }
            Err(_) => Err(ReadError::Close),
        }
    }

    /// Reads one CRLF-terminated line of the head, at most `max_line` bytes, charged to
    /// `head_left`. `field` allows the tab of header values. Any byte that cannot be part
    /// of an HTTP head ends the request at once.
    fn read_line(
        &mut self,
        field: bool,
        head_left: &mut usize,
        any: &mut bool,
    ) -> Result<Vec<u8>, ReadError> {
        let max_line = self.socket.limits().max_line;
        let mut line = Vec::with_capacity(64);
        loop {
            let b = self.head_byte(*any)?;
            *any = true;
            if *head_left == 0 {
                return Err(ReadError::Refuse(431, "Request head too large"));
            }
            *head_left -= 1;
            if line.last() == Some(&b'\r') {
                if b != b'\n' {
                    return Err(ReadError::Refuse(400, "Malformed request head"));
                }
                line.pop();
                return Ok(line);
            }
            let allowed = b == b'\r' || b == b' ' || (0x21..=0x7e).contains(&b) || (field && b == b'\t');
            if !allowed {
                return Err(ReadError::Refuse(400, "Malformed request head"));
            }
            if line.len() >= max_line {
                return Err(ReadError::Refuse(431, "Request header line too long"));
            }
            line.push(b);
        }
    }

    fn read_head(&mut self) -> Result<(Method, String, HTTPVersion, Vec<Header>), ReadError> {
        let limits = self.socket.limits();
        let (max_head, max_headers) = (limits.max_head, limits.max_headers);
        let mut head_left = max_head;
        let mut any = false;

        // RFC 9112 §2.2: empty lines before the request line are ignored.
        let mut line = self.read_line(false, &mut head_left, &mut any)?;
        for _ in 0..4 {
            if !line.is_empty() {
                break;
            }
            line = self.read_line(false, &mut head_left, &mut any)?;
        }
        let (method, path, version) = parse_request_line(&line)?;

        let mut headers = Vec::new();
        loop {
            let line = self.read_line(true, &mut head_left, &mut any)?;
            if line.is_empty() {
                break;
            }
            if headers.len() >= max_headers {
                return Err(ReadError::Refuse(431, "Too many header fields"));
            }
            headers.push(parse_header_line(&line)?);
        }
        Ok((method, path, version, headers))
    }

    fn read(&mut self) -> Result<Request, ReadError> {
        let (method, path, version, headers) = self.read_head()?;

        // One request at a time: this one goes to the application only once the previous
        // response is complete. (The head is read before waiting, so a kept-alive
        // connection is already reading when its response goes out: no extra wake-up.)
        let mut writer = self.sink.next_writer();
        writer.wait_turn();
        let writer = Tracked::new(writer, self.socket.clone());

        // follow-up for next potential request
        let mut data_source = self.source.next_reader();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        crate::request::new_request(
            false,
            method,
            path,
            version,
            headers,
            self.remote_addr,
            data_source,
            writer,
            Some(self.socket.clone()),
        )
        .map_err(|e| {
            use crate::request::RequestCreationError as E;
            match e {
                E::ExpectationFailed => ReadError::Refuse(417, "Expectation Failed"),
                E::Refused(status, message) => ReadError::Refuse(status, message),
                E::CreationIoError(e) if e.kind() == ErrorKind::TimedOut => {
                    ReadError::Refuse(408, "Request body not received in time")
                }
                E::CreationIoError(_) => ReadError::Close,
            }
        })
    }

    /// Skips what the previous request's body reader left unread, if it is small enough.
    /// False when the connection cannot be reused.
    fn skip_unread_body(&mut self) -> bool {
        let unread = self.socket.take_unread();
        if unread == 0 {
            return true;
        }
        if unread > self.socket.limits().drain_limit {
            return false;
        }
        // The rest of the body must still arrive at the minimum rate.
        self.socket.begin_body();
        let mut left = unread;
        let mut buf = [0u8; 8192];
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            match self.next_header_source.read(&mut buf[..want]) {
                Ok(0) | Err(_) => return false,
                Ok(n) => left -= n as u64,
            }
        }
        true
    }

    /// Answers an error of this layer once every earlier response is out, then closes.
    fn refuse(&mut self, status: u16, message: &str) {
        let mut writer = self.sink.next_writer();
        write_error(&mut writer, status, message);
        drop(writer);
        self.linger();
    }

    /// Closes gently: once every response is out, the write side is shut (the peer sees
    /// the end), then what the peer still sends is read and dropped for a few seconds.
    /// Closing with unread data would send a reset that can destroy the last answer in
    /// the peer's buffers.
    fn linger(&mut self) {
        self.no_more_requests = true;
        let mut last = self.sink.next_writer();
        last.wait_turn();
        drop(last);
        self.socket.shutdown(Shutdown::Write);
        self.socket.begin_linger();
        let mut buf = [0u8; 8192];
        let mut total = 0usize;
        while total < 16 << 20 {
            match self.next_header_source.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    fn next(&mut self) -> Option<Request> {
        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            // A body the last request left unread may still be arriving: closing on it
            // would reset the connection and can destroy the answer.
            self.next_header_source.wait_turn();
            if self.socket.take_unread() != 0 {
                self.linger();
            }
            return None;
        }

        // Wait until the previous request's body reader has handed the stream back.
        self.next_header_source.wait_turn();
        if !self.skip_unread_body() {
            self.linger();
            return None;
        }
        if self.first {
            self.first = false;
            self.socket.begin_first_head();
        } else {
            self.socket.begin_idle();
        }

        let rq = match self.read() {
            Ok(rq) => rq,
            Err(ReadError::Refuse(status, message)) => {
                self.refuse(status, message);
                return None;
            }
            Err(ReadError::Close) => {
                self.no_more_requests = true;
                return None;
            }
        };

        // updating the status of the connection
        let connection_header =
            rq.headers().iter().find(|h| h.field.equiv("Connection")).map(|h| h.value.as_str());

        let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

        match lowercase {
            Some(ref val) if val.contains("close") => self.no_more_requests = true,
            Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
            Some(ref val) if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) => {
                self.no_more_requests = true
            }
            None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
            _ => (),
        };

        // returning the request
        Some(rq)
    }
}

/// `METHOD SP target SP HTTP/x.y`, exactly.
fn parse_request_line(line: &[u8]) -> Result<(Method, String, HTTPVersion), ReadError> {
    const BAD: ReadError = ReadError::Refuse(400, "Malformed request line");
    let text = std::str::from_utf8(line).map_err(|_| BAD)?;
    let mut parts = text.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => return Err(BAD),
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) || target.is_empty() {
        return Err(BAD);
    }
    let version = match version {
        "HTTP/1.0" => HTTPVersion(1, 0),
        "HTTP/1.1" => HTTPVersion(1, 1),
        v if v.len() == 8 && v.starts_with("HTTP/") && v.as_bytes()[6] == b'.' => {
            return Err(ReadError::Refuse(505, "HTTP Version Not Supported"))
        }
        _ => return Err(BAD),
    };
    let method = Method::from_str(method).map_err(|_| BAD)?;
    Ok((method, target.to_owned(), version))
}

/// `name: value`, the name a token with nothing between it and the colon, the value
/// without surrounding spaces. A line starting with a space (obsolete folding) is refused.
fn parse_header_line(line: &[u8]) -> Result<Header, ReadError> {
    const BAD: ReadError = ReadError::Refuse(400, "Malformed header field");
    let colon = line.iter().position(|&b| b == b':').ok_or(BAD)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
        return Err(BAD);
    }
    let value = std::str::from_utf8(value).map_err(|_| BAD)?.trim_matches(|c| c == ' ' || c == '\t');
    let name = std::str::from_utf8(name).map_err(|_| BAD)?;
    Ok(Header {
        field: HeaderField::from_str(name).map_err(|_| BAD)?,
        value: AsciiString::from_ascii(value).map_err(|_| BAD)?,
    })
}

#[cfg(test)]
mod test {
    use super::{parse_header_line, parse_request_line, ReadError};

    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = parse_request_line(b"GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(parse_request_line(b"GET /hello").is_err());
        assert!(parse_request_line(b"qsd qsd qsd").is_err());
        assert!(parse_request_line(b"GET  /hello HTTP/1.1").is_err());
        assert!(parse_request_line(b"GET /hello HTTP/1.1 x").is_err());
        assert!(parse_request_line(b"G(T /hello HTTP/1.1").is_err());
        assert_eq!(
            parse_request_line(b"GET / HTTP/2.0").unwrap_err(),
            ReadError::Refuse(505, "HTTP Version Not Supported")
        );
    }

    #[test]
    fn header_names_are_tokens_right_before_the_colon() {
        let h = parse_header_line(b"Content-Length:  5 ").unwrap();
        assert_eq!((h.field.as_str().as_str(), h.value.as_str()), ("Content-Length", "5"));
        for bad in [&b"Content-Length : 5"[..], b" folded: x", b": x", b"no colon", b"\tX: y"] {
            assert!(parse_header_line(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
