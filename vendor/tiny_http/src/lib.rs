//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
//!
//! # astrbot's copy
//!
//! This is tiny_http 0.12.0 with the patches listed in `PATCHES.md`: bounded heads and
//! bodies, deadlines on every read, strict framing, a connection cap, an accept loop that
//! never dies, one thread and one descriptor per connection, and no TLS.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]

use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use client::ClientConnection;
use connection::Connection;
use util::{MessagesQueue, Registry};

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use request::{ReadWrite, Request, Upgraded};
pub use response::{Response, ResponseBox};
pub use test::TestRequest;

mod client;
mod common;
mod connection;
mod request;
mod response;
mod test;
mod util;

/// The main class of this library.
///
/// Dropping it stops accepting connections. Requests already returned by `recv()` are
/// still answered.
pub struct Server {
    // set once the server stops accepting
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,

    // the live connections
    registry: Arc<Registry>,
}

enum Message {
    #[allow(dead_code)]
    Error(IoError),
    NewRequest(Request),
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

// Server must be Sync and Send: worker threads share it.
const _: fn() = || {
    fn must_be_sync_send<T: Sync + Send>() {}
    must_be_sync_send::<Server>();
};

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// The transport limits (astrbot patch P3).
    pub limits: Limits,
}

/// What a client may cost the server (astrbot patches P1-P6; see PATCHES.md).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once; beyond, a new connection closes the one that has waited
    /// longest for its next request, or else gets 503 and is closed.
    pub max_connections: usize,
    /// The longest request line or header line (431 beyond).
    pub max_line: usize,
    /// The longest head, request line and header fields together (431 beyond).
    pub max_head: usize,
    /// The most header fields in one head (431 beyond).
    pub max_headers: usize,
    /// How long a head may take to arrive, from its first byte (408 after).
    pub head_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long one write to a client may block.
    pub write_timeout: Duration,
    /// The slowest average body rate accepted, in bytes a second, after `body_grace`.
    pub min_body_rate: u64,
    /// Time a body gets before the rate counts.
    pub body_grace: Duration,
    /// The most of an unread body skipped to keep a connection; beyond it is closed.
    pub drain_limit: u64,
    /// How long a closing connection keeps reading what the peer still sends.
    pub linger_timeout: Duration,
    /// Stack size of a connection's thread.
    pub connection_stack: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            max_line: 8 << 10,
            max_head: 64 << 10,
            max_headers: 100,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            min_body_rate: 1024,
            body_grace: Duration::from_secs(10),
            drain_limit: 1 << 20,
            linger_timeout: Duration::from_secs(5),
            connection_stack: 256 << 10,
        }
    }
}

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            limits: Limits::default(),
        })
    }

    /// Shortcut for a UNIX socket server at a specific path
    #[cfg(unix)]
    #[inline]
    pub fn http_unix(path: &std::path::Path) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig { addr: ConfigListenAddr::unix_from_path(path), limits: Limits::default() })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener(listener, config.limits)
    }

    /// Builds a new server using the specified TCP socket or UNIX socket listener.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        limits: Limits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = listener.into();
        let close = Arc::new(AtomicBool::new(false));
        let listening_addr = listener.local_addr()?;
        log::debug!("Server listening on {}", listening_addr);

        let messages = MessagesQueue::with_capacity(8);
        let registry = Registry::new();
        let limits = Arc::new(limits);

        let (inside_close, inside_messages, inside_registry) =
            (close.clone(), messages.clone(), registry.clone());
        thread::Builder::new().name("http-accept".into()).spawn(move || {
            accept_loop(listener, &inside_close, &inside_messages, &inside_registry, &limits)
        })?;

        Ok(Server { messages, close, listening_addr, registry })
    }

    /// Returns an iterator for all the incoming requests.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// The number of connections open now.
    pub fn num_connections(&self) -> usize {
        self.registry.len()
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::other("thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Unblock one thread stuck in recv() or incoming_requests().
    pub fn unblock(&self) {
        self.messages.unblock();
    }

    /// Stops accepting connections; connections already open go on. The accept thread
    /// sees the flag at its next wake-up, which a connection to ourselves provokes.
    pub fn stop_accepting(&self) {
        if self.close.swap(true, Relaxed) {
            return;
        }
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => {
                TcpStream::connect_timeout(addr, Duration::from_secs(1)).map(Connection::from)
            }
            #[cfg(unix)]
            ListenAddr::Unix(addr) => match addr.as_pathname() {
                Some(path) => std::os::unix::net::UnixStream::connect(path).map(Connection::from),
                None => return,
            },
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_accepting();

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Accepts connections until `close` is set, each on a thread of its own. It never gives
/// up (astrbot patch P5): 0.12.0 ended this loop on the first accept error (EMFILE, even
/// ECONNABORTED) and panicked when a thread could not start, after which the process
/// lived on without ever answering again.
fn accept_loop(
    listener: Listener,
    close: &AtomicBool,
    messages: &Arc<MessagesQueue<Message>>,
    registry: &Arc<Registry>,
    limits: &Arc<Limits>,
) {
    let min_backoff = Duration::from_millis(10);
    let mut backoff = min_backoff;
    let mut failing = false;
    log::debug!("Running accept thread");
    while !close.load(Relaxed) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if matches!(e.kind(), IoErrorKind::ConnectionAborted | IoErrorKind::Interrupted) => {
                continue
            }
            Err(e) => {
                if close.load(Relaxed) {
                    break;
                }
                // EMFILE, ENFILE, ENOMEM, ENOBUFS: wait for resources to come back.
                if !failing {
                    log::error!("cannot accept connections ({}); retrying with back-off", e);
                    failing = true;
                }
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        if close.load(Relaxed) {
            break;
        }
        let _ = stream.tune(limits.write_timeout);
        if registry.len() >= limits.max_connections && !registry.evict_idle() {
            refuse(&stream, 503, "Too many connections");
            continue;
        }
        let socket = registry.register(stream, limits.clone());
        let queue = messages.clone();
        let conn = socket.clone();
        let spawned = thread::Builder::new()
            .name("http-conn".into())
            .stack_size(limits.connection_stack)
            .spawn(move || {
                for rq in ClientConnection::new(conn) {
                    queue.push(rq.into());
                }
            });
        match spawned {
            Ok(_) => {
                if failing {
                    log::info!("accepting connections again");
                }
                failing = false;
                backoff = min_backoff;
            }
            Err(e) => {
                if !failing {
                    log::error!("cannot start a connection thread ({}); answering 503", e);
                    failing = true;
                }
                socket.refuse(503, "Too many connections");
                drop(socket);
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
    log::debug!("Terminating accept thread");
}

/// Answers a connection we will not serve and shuts its write side. What the peer already
/// sent is read first, so the close is not a reset that destroys the answer.
pub(crate) fn refuse(stream: &Connection, status: u16, message: &str) {
    struct Raw<'a>(&'a Connection);
    impl std::io::Write for Raw<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write_shared(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    if stream.set_nonblocking(true).is_ok() {
        let mut buf = [0u8; 4096];
        for _ in 0..16 {
            match stream.read_shared(&mut buf) {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
        let _ = stream.set_nonblocking(false);
    }
    client::write_error(&mut Raw(stream), status, message);
    let _ = stream.shutdown(Shutdown::Write);
}
