use std::io::Error as IoError;
use std::io::{self, Cursor, ErrorKind, Read, Write};

use std::fmt;
use std::net::SocketAddr;

use std::sync::mpsc::Sender;

use std::sync::Arc;
use std::time::Duration;

use crate::util::{ChunkedReader, EqualReader, FusedReader, Socket};
use crate::{HTTPVersion, Header, Method, Response, StatusCode};

/// Represents an HTTP request made by a client.
///
/// A `Request` object is what is produced by the server, and is your what
/// your code must analyse and answer.
///
/// This object implements the `Send` trait, therefore you can dispatch your requests to
/// worker threads.
///
/// # Pipelining
///
/// If a client sends multiple requests in a row (without waiting for the response), then you will
/// get multiple `Request` objects simultaneously. This is called *requests pipelining*.
/// Tiny-http automatically reorders the responses so that you don't need to worry about the order
/// in which you call `respond` or `into_writer`.
///
/// This mechanic is disabled if:
///
///  - The body of a request is large enough (handling requires pipelining requires storing the
///    body of the request in a buffer ; if the body is too big, tiny-http will avoid doing that)
///  - A request sends a `Expect: 100-continue` header (which means that the client waits to
///    know whether its body will be processed before sending it)
///  - A request sends a `Connection: close` header or `Connection: upgrade` header (used for
///    websockets), which indicates that this is the last request that will be received on this
///    connection
///
/// # Automatic cleanup
///
/// If a `Request` object is destroyed without `into_writer` or `respond` being called,
/// an empty response with a 500 status code (internal server error) will automatically be
/// sent back to the client.
/// This means that if your code fails during the handling of a request, this "internal server
/// error" response will automatically be sent during the stack unwinding.
///
/// # Testing
///
/// If you want to build fake requests to test your server, use [`TestRequest`](crate::test::TestRequest).
pub struct Request {
    // where to read the body from
    data_reader: Option<Box<dyn Read + Send + 'static>>,

    // if this writer is empty, then the request has been answered
    response_writer: Option<Box<dyn Write + Send + 'static>>,

    remote_addr: Option<SocketAddr>,

    // true if HTTPS, false if HTTP
    secure: bool,

    method: Method,

    path: String,

    http_version: HTTPVersion,

    headers: Vec<Header>,

    body_length: Option<u64>,

    // true if a `100 Continue` response must be sent when `as_reader()` is called
    must_send_continue: bool,

    // If Some, a message must be sent after responding
    notify_when_responded: Option<Sender<()>>,

    // the connection, told when a body starts after `100 Continue`
    socket: Option<Arc<Socket>>,

    // The rest of the stream of a bodiless request asking for a protocol upgrade (astrbot
    // patch P7): held until the request is answered (the connection thread waits for it),
    // handed to the application by `upgrade_raw`.
    upgrade_source: Option<Box<dyn Read + Send + 'static>>,
}

/// A connection handed over by [`Request::upgrade_raw`] (astrbot patch P7): reads wait at
/// most the given time, then fail with `WouldBlock`; writes go out through the
/// connection's writer (call `flush`). The connection stays counted against the connection
/// cap, is never closed as idle, and its thread waits until this is dropped, which closes
/// it.
pub struct Upgraded {
    reader: Box<dyn Read + Send + 'static>,
    writer: Box<dyn Write + Send + 'static>,
    socket: Option<Arc<Socket>>,
}

impl Upgraded {
    /// How long a read waits for data before it fails with `WouldBlock`.
    pub fn set_read_wait(&self, wait: Duration) {
        if let Some(socket) = &self.socket {
            socket.begin_upgraded(wait);
        }
    }
}

impl Read for Upgraded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl Write for Upgraded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

struct NotifyOnDrop<R> {
    sender: Sender<()>,
    inner: R,
}

impl<R: Read> Read for NotifyOnDrop<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}
impl<R: Write> Write for NotifyOnDrop<R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
impl<R> Drop for NotifyOnDrop<R> {
    fn drop(&mut self) {
        self.sender.send(()).unwrap();
    }
}

/// Error that can happen when building a `Request` object.
#[derive(Debug)]
pub enum RequestCreationError {
    /// The client sent an `Expect` header different from `100-continue`.
    ExpectationFailed,

    /// The head frames its body ambiguously or in a way we do not support (astrbot patch
    /// P4): answer this status with this message and close the connection.
    Refused(u16, &'static str),

    /// Error while reading data from the socket during the creation of the `Request`.
    CreationIoError(IoError),
}

impl From<IoError> for RequestCreationError {
    fn from(err: IoError) -> RequestCreationError {
        RequestCreationError::CreationIoError(err)
    }
}

/// How a request's body is delimited.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A `Content-Length` element: digits only, at most 2^63-1.
fn parse_content_length(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok().filter(|n| *n <= i64::MAX as u64)
}

/// The body framing of a head, refusing every shape that two HTTP parsers could read
/// differently (astrbot patch P4): several or malformed `Content-Length` values (repeats
/// of one value are allowed, as RFC 9110 permits), a `Transfer-Encoding` other than
/// exactly `chunked` (501), both headers at once, or `Transfer-Encoding` on HTTP/1.0.
fn body_framing(headers: &[Header], version: &HTTPVersion) -> Result<Framing, RequestCreationError> {
    let mut length: Option<u64> = None;
    let mut transfer_encodings = 0usize;
    let mut chunked = true;
    for header in headers {
        if header.field.equiv("Content-Length") {
            for element in header.value.as_str().split(',') {
                let element = element.trim_matches(|c| c == ' ' || c == '\t');
                let n = parse_content_length(element)
                    .ok_or(RequestCreationError::Refused(400, "Invalid Content-Length"))?;
                if length.is_some_and(|seen| seen != n) {
                    return Err(RequestCreationError::Refused(400, "Conflicting Content-Length values"));
                }
                length = Some(n);
            }
        } else if header.field.equiv("Transfer-Encoding") {
            transfer_encodings += 1;
            chunked &= header.value.as_str().eq_ignore_ascii_case("chunked");
        }
    }
    match (transfer_encodings, length) {
        (0, None) => Ok(Framing::None),
        (0, Some(n)) => Ok(Framing::Length(n)),
        (_, Some(_)) => {
            Err(RequestCreationError::Refused(400, "Transfer-Encoding and Content-Length together"))
        }
        _ if *version < HTTPVersion(1, 1) => {
            Err(RequestCreationError::Refused(400, "Transfer-Encoding needs HTTP/1.1"))
        }
        (1, None) if chunked => Ok(Framing::Chunked),
        _ => Err(RequestCreationError::Refused(501, "Transfer-Encoding other than chunked is not supported")),
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn new_request<R, W>(
    secure: bool,
    method: Method,
    path: String,
    version: HTTPVersion,
    headers: Vec<Header>,
    remote_addr: Option<SocketAddr>,
    mut source_data: R,
    writer: W,
    socket: Option<Arc<Socket>>,
) -> Result<Request, RequestCreationError>
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    let framing = body_framing(&headers, &version)?;

    // true if the client sent a `Expect: 100-continue` header
    let expects_continue = {
        match headers.iter().find(|h: &&Header| h.field.equiv("Expect")).map(|h| h.value.as_str()) {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("100-continue") => true,
            _ => return Err(RequestCreationError::ExpectationFailed),
        }
    };

    // From here on, reads are body reads: they must keep up the minimum rate.
    if let Some(socket) = &socket {
        socket.begin_body();
    }

    let content_length = match framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };

    // we wrap `source_data` around a reading whose nature depends on the transfer-encoding and
    // content-length headers
    // The body reader follows the framing; `Connection: upgrade` changes nothing (astrbot
    // patch P4: 0.12.0 handed such a request the raw stream as its body, which a handler
    // reading a body then waited on).
    let wants_upgrade = matches!(framing, Framing::None)
        && headers.iter().any(|h| h.field.equiv("Upgrade"))
        && headers
            .iter()
            .filter(|h| h.field.equiv("Connection"))
            .any(|h| h.value.as_str().split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    let mut upgrade_source = None;
    let reader = match framing {
        Framing::None if wants_upgrade => {
            upgrade_source = Some(Box::new(source_data) as Box<dyn Read + Send + 'static>);
            Box::new(io::empty()) as Box<dyn Read + Send + 'static>
        }
        Framing::None | Framing::Length(0) => Box::new(io::empty()) as Box<dyn Read + Send + 'static>,
        Framing::Length(n) if n <= 1024 && !expects_continue => {
            // a small body is read at once, on the connection's own thread
            let mut buffer = vec![0; n as usize];
            let mut offset = 0;
            while offset != buffer.len() {
                let read = source_data.read(&mut buffer[offset..])?;
                if read == 0 {
                    let info = "Connection has been closed before we received enough data";
                    let err = IoError::new(ErrorKind::ConnectionAborted, info);
                    return Err(RequestCreationError::CreationIoError(err));
                }
                offset += read;
            }
            Box::new(Cursor::new(buffer)) as Box<dyn Read + Send + 'static>
        }
        Framing::Length(n) => {
            let data_reader = EqualReader::new(source_data, n, socket.clone());
            Box::new(FusedReader::new(data_reader)) as Box<dyn Read + Send + 'static>
        }
        Framing::Chunked => Box::new(FusedReader::new(ChunkedReader::new(source_data, socket.clone())))
            as Box<dyn Read + Send + 'static>,
    };

    Ok(Request {
        data_reader: Some(reader),
        response_writer: Some(Box::new(writer) as Box<dyn Write + Send + 'static>),
        remote_addr,
        secure,
        method,
        path,
        http_version: version,
        headers,
        body_length: content_length,
        must_send_continue: expects_continue,
        notify_when_responded: None,
        socket,
        upgrade_source,
    })
}

impl Request {
    /// Returns true if the request was made through HTTPS.
    #[inline]
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Returns the method requested by the client (eg. `GET`, `POST`, etc.).
    #[inline]
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Returns the resource requested by the client.
    #[inline]
    pub fn url(&self) -> &str {
        &self.path
    }

    /// Returns a list of all headers sent by the client.
    #[inline]
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// Returns the HTTP version of the request.
    #[inline]
    pub fn http_version(&self) -> &HTTPVersion {
        &self.http_version
    }

    /// Returns the length of the body in bytes.
    ///
    /// Returns `None` if the length is unknown.
    #[inline]
    pub fn body_length(&self) -> Option<u64> {
        self.body_length
    }

    /// Returns the address of the client that sent this request.
    ///
    /// The address is always `Some` for TCP listeners, but always `None` for UNIX listeners
    /// (as the remote address of a UNIX client is almost always unnamed).
    ///
    /// Note that this is gathered from the socket. If you receive the request from a proxy,
    /// this function will return the address of the proxy and not the address of the actual
    /// user.
    #[inline]
    pub fn remote_addr(&self) -> Option<&SocketAddr> {
        self.remote_addr.as_ref()
    }

    /// Sends a response with a `Connection: upgrade` header, then turns the `Request` into a `Stream`.
    ///
    /// The main purpose of this function is to support websockets.
    /// If you detect that the request wants to use some kind of protocol upgrade, you can
    ///  call this function to obtain full control of the socket stream.
    ///
    /// If you call this on a non-websocket request, tiny-http will wait until this `Stream` object
    ///  is destroyed before continuing to read or write on the socket. Therefore you should always
    ///  destroy it as soon as possible.
    pub fn upgrade<R: Read>(mut self, protocol: &str, response: Response<R>) -> Box<dyn ReadWrite + Send> {
        use crate::util::CustomStream;

        response
            .raw_print(
                self.response_writer.as_mut().unwrap().by_ref(),
                self.http_version.clone(),
                &self.headers,
                false,
                Some(protocol),
            )
            .ok(); // TODO: unused result

        self.response_writer.as_mut().unwrap().flush().ok(); // TODO: unused result

        let stream = CustomStream::new(self.extract_reader_impl(), self.extract_writer_impl());
        if let Some(sender) = self.notify_when_responded.take() {
            let stream = NotifyOnDrop { sender, inner: stream };
            Box::new(stream) as Box<dyn ReadWrite + Send>
        } else {
            Box::new(stream) as Box<dyn ReadWrite + Send>
        }
    }

    /// Whether this request asks for a protocol upgrade (`Connection: upgrade` with an
    /// `Upgrade` header, no body) and can be handed over by [`Request::upgrade_raw`].
    pub fn is_upgrade(&self) -> bool {
        self.upgrade_source.is_some()
    }

    /// Hands the connection over for another protocol (astrbot patch P7): nothing is
    /// written (the caller writes its `101` head itself); reads wait at most `read_wait`.
    /// The request comes back unchanged when it is no upgrade request.
    pub fn upgrade_raw(mut self, read_wait: Duration) -> Result<Upgraded, Box<Request>> {
        let Some(reader) = self.upgrade_source.take() else { return Err(Box::new(self)) };
        if let Some(socket) = &self.socket {
            socket.begin_upgraded(read_wait);
        }
        let mut writer = self.extract_writer_impl();
        if let Some(sender) = self.notify_when_responded.take() {
            writer = Box::new(NotifyOnDrop { sender, inner: writer });
        }
        Ok(Upgraded { reader, writer, socket: self.socket.clone() })
    }

    /// Allows to read the body of the request.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # use std::io::Read;
    /// # fn get_content_type(_: &tiny_http::Request) -> &'static str { "" }
    /// # fn main() {
    /// # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
    /// let mut request = server.recv().unwrap();
    ///
    /// if get_content_type(&request) == "application/json" {
    ///     let mut content = String::new();
    ///     request.as_reader().read_to_string(&mut content).unwrap();
    /// }
    /// # }
    /// ```
    ///
    /// If the client sent a `Expect: 100-continue` header with the request, calling this
    ///  function will send back a `100 Continue` response.
    #[inline]
    pub fn as_reader(&mut self) -> &mut dyn Read {
        if self.must_send_continue {
            let msg = Response::new_empty(StatusCode(100));
            msg.raw_print(
                self.response_writer.as_mut().unwrap().by_ref(),
                self.http_version.clone(),
                &self.headers,
                true,
                None,
            )
            .ok();
            self.response_writer.as_mut().unwrap().flush().ok();
            self.must_send_continue = false;
            // The client sends its body only now: its rate is measured from here.
            if let Some(socket) = &self.socket {
                socket.begin_body();
            }
        }

        self.data_reader.as_mut().unwrap()
    }

    /// Turns the `Request` into a writer.
    ///
    /// The writer has a raw access to the stream to the user.
    /// This function is useful for things like CGI.
    ///
    /// Note that the destruction of the `Writer` object may trigger
    /// some events. For exemple if a client has sent multiple requests and the requests
    /// have been processed in parallel, the destruction of a writer will trigger
    /// the writing of the next response.
    /// Therefore you should always destroy the `Writer` as soon as possible.
    #[inline]
    pub fn into_writer(mut self) -> Box<dyn Write + Send + 'static> {
        let writer = self.extract_writer_impl();
        if let Some(sender) = self.notify_when_responded.take() {
            let writer = NotifyOnDrop { sender, inner: writer };
            Box::new(writer) as Box<dyn Write + Send + 'static>
        } else {
            writer
        }
    }

    /// Extract the response `Writer` object from the Request, dropping this `Writer` has the same side effects
    /// as the object returned by `into_writer` above.
    ///
    /// This may only be called once on a single request.
    fn extract_writer_impl(&mut self) -> Box<dyn Write + Send + 'static> {
        use std::mem;

        assert!(self.response_writer.is_some());

        let mut writer = None;
        mem::swap(&mut self.response_writer, &mut writer);
        writer.unwrap()
    }

    /// Extract the body `Reader` object from the Request.
    ///
    /// This may only be called once on a single request.
    fn extract_reader_impl(&mut self) -> Box<dyn Read + Send + 'static> {
        use std::mem;

        assert!(self.data_reader.is_some());

        let mut reader = None;
        mem::swap(&mut self.data_reader, &mut reader);
        reader.unwrap()
    }

    /// Sends a response to this request.
    #[inline]
    pub fn respond<R>(mut self, response: Response<R>) -> Result<(), IoError>
    where
        R: Read,
    {
        let res = self.respond_impl(response);
        if let Some(sender) = self.notify_when_responded.take() {
            sender.send(()).unwrap();
        }
        res
    }

    fn respond_impl<R>(&mut self, response: Response<R>) -> Result<(), IoError>
    where
        R: Read,
    {
        let mut writer = self.extract_writer_impl();

        let do_not_send_body = self.method == Method::Head;

        Self::ignore_client_closing_errors(response.raw_print(
            writer.by_ref(),
            self.http_version.clone(),
            &self.headers,
            do_not_send_body,
            None,
        ))?;

        Self::ignore_client_closing_errors(writer.flush())
    }

    fn ignore_client_closing_errors(result: io::Result<()>) -> io::Result<()> {
        result.or_else(|err| match err.kind() {
            ErrorKind::BrokenPipe => Ok(()),
            ErrorKind::ConnectionAborted => Ok(()),
            ErrorKind::ConnectionRefused => Ok(()),
            ErrorKind::ConnectionReset => Ok(()),
            _ => Err(err),
        })
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> Result<(), fmt::Error> {
        write!(formatter, "Request({} {} from {:?})", self.method, self.path, self.remote_addr)
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.response_writer.is_some() {
            let response = Response::empty(500);
            let _ = self.respond_impl(response); // ignoring any potential error
            if let Some(sender) = self.notify_when_responded.take() {
                sender.send(()).unwrap();
            }
        }
    }
}

/// Dummy trait that regroups the `Read` and `Write` traits.
///
/// Automatically implemented on all types that implement both `Read` and `Write`.
pub trait ReadWrite: Read + Write {}
impl<T> ReadWrite for T where T: Read + Write {}

#[cfg(test)]
mod tests {
    use super::{body_framing, Framing, Request, RequestCreationError};
    use crate::{HTTPVersion, Header};

    fn framing(lines: &[&str]) -> Result<Framing, u16> {
        let headers: Vec<Header> = lines.iter().map(|l| l.parse().unwrap()).collect();
        body_framing(&headers, &HTTPVersion(1, 1)).map_err(|e| match e {
            RequestCreationError::Refused(status, _) => status,
            other => panic!("unexpected {:?}", other),
        })
    }

    #[test]
    fn content_length_is_digits_one_value_at_most_2_pow_63_minus_1() {
        assert_eq!(framing(&["Content-Length: 5"]), Ok(Framing::Length(5)));
        assert_eq!(framing(&["Content-Length: 5, 5"]), Ok(Framing::Length(5)));
        assert_eq!(framing(&["Content-Length: 5", "Content-Length: 5"]), Ok(Framing::Length(5)));
        assert_eq!(framing(&["Content-Length: 9223372036854775807"]), Ok(Framing::Length(i64::MAX as u64)));
        for bad in [
            "Content-Length: 9223372036854775808",
            "Content-Length: 18446744073709551615",
            "Content-Length: 18446744073709551616",
            "Content-Length: +5",
            "Content-Length: -1",
            "Content-Length: 5 5",
            "Content-Length: 0x10",
            "Content-Length: 5,",
            "Content-Length: ",
            "Content-Length: 5, 6",
        ] {
            assert_eq!(framing(&[bad]), Err(400), "{}", bad);
        }
        assert_eq!(framing(&["Content-Length: 5", "Content-Length: 6"]), Err(400));
    }

    #[test]
    fn transfer_encoding_is_exactly_chunked_and_never_with_a_length() {
        assert_eq!(framing(&["Transfer-Encoding: chunked"]), Ok(Framing::Chunked));
        assert_eq!(framing(&["Transfer-Encoding: gzip, chunked"]), Err(501));
        assert_eq!(framing(&["Transfer-Encoding: chunked, identity"]), Err(501));
        assert_eq!(framing(&["Transfer-Encoding: xchunked"]), Err(501));
        assert_eq!(framing(&["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"]), Err(501));
        assert_eq!(framing(&["Transfer-Encoding: chunked", "Content-Length: 5"]), Err(400));
        let headers: Vec<Header> = vec!["Transfer-Encoding: chunked".parse().unwrap()];
        assert!(body_framing(&headers, &HTTPVersion(1, 0)).is_err());
    }

    #[test]
    fn must_be_send() {
        #![allow(dead_code)]
        fn f<T: Send>(_: &T) {}
        fn bar(rq: &Request) {
            f(rq);
        }
    }

    #[test]
    fn an_upgraded_connection_is_raw_bounded_and_counted_until_dropped() {
        use std::io::{Read, Write};
        use std::time::{Duration, Instant};
        let server = crate::Server::http("127.0.0.1:0").unwrap();
        let addr = server.server_addr().to_ip().unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        client
            .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .unwrap();
        let rq = server.recv().unwrap();
        assert!(rq.is_upgrade());
        let mut up = rq.upgrade_raw(Duration::from_millis(50)).ok().unwrap();
        up.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").unwrap();
        up.flush().unwrap();
        let expected = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
        let mut head = vec![0u8; expected.len()];
        client.read_exact(&mut head).unwrap();
        assert_eq!(&head[..], &expected[..]);
        // Silence: a read waits about the given time, then says WouldBlock (no body deadline).
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let e = up.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        assert!(started.elapsed() < Duration::from_secs(2));
        // The rest of the stream is the application's, both ways.
        client.write_all(b"ping").unwrap();
        let mut got = Vec::new();
        while got.len() < 4 {
            match up.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, b"ping");
        up.write_all(b"pong").unwrap();
        up.flush().unwrap();
        let mut pong = [0u8; 4];
        client.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"pong");
        assert_eq!(server.num_connections(), 1, "an upgraded connection counts");
        drop(up);
        // Dropped: the connection closes and leaves the count.
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).unwrap(), 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.num_connections() != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(server.num_connections(), 0);
    }

    #[test]
    fn a_request_that_is_no_upgrade_comes_back() {
        use std::io::Write;
        let server = crate::Server::http("127.0.0.1:0").unwrap();
        let addr = server.server_addr().to_ip().unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let rq = server.recv().unwrap();
        assert!(!rq.is_upgrade());
        let rq = rq.upgrade_raw(std::time::Duration::from_millis(50)).err().unwrap();
        rq.respond(crate::Response::empty(204)).unwrap();
    }
}
