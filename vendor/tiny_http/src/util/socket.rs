//! One accepted connection's socket, shared by the thread that parses its requests, the
//! body reader of the request being answered and the response writer (astrbot patches P2,
//! P3 and P5; see PATCHES.md).
//!
//! 0.12.0 split each connection with `try_clone()` into two descriptors and panicked when
//! that failed (EMFILE); it set no timeouts at all. Here one descriptor is shared through an
//! `Arc`, and every read is bounded by the deadline of the phase the connection is in:
//! waiting for a request (idle keep-alive), reading a head (all of it within
//! `head_timeout`), reading a body (at `min_body_rate` on average after `body_grace`) or
//! lingering before a close. The deadline is applied with `SO_RCVTIMEO` before each read, so
//! a peer that stalls costs one sleeping thread until its deadline and no more.
//!
//! The [`Registry`] counts live connections for the cap and can close the connection that
//! has waited longest for its next request when a new one needs the room.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::connection::Connection;
use crate::Limits;

/// `unread` value for a body of unknown remaining length (chunked).
pub(crate) const UNREAD_UNKNOWN: u64 = u64::MAX;

/// Where a connection is in its life; decides the deadline of the next read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the first byte of the next request.
    Idle { until: Instant },
    /// Reading a request head, which must be complete by `until`.
    Head { until: Instant },
    /// Reading a body: byte `n` must have arrived by `start + grace + n / rate`.
    Body { start: Instant, received: u64 },
    /// Discarding what a peer still sends before the connection is closed.
    Linger { until: Instant, quiet_until: Instant },
    /// Handed over for another protocol (a WebSocket, astrbot patch P7): each read waits
    /// at most `wait`, then fails with `WouldBlock`; the application keeps its own time.
    Upgraded { wait: Duration },
}

impl Phase {
    /// The instant by which the next byte must arrive; `None` when it is too far away to
    /// represent (a body phase with an absurd byte count).
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        match *self {
            Phase::Idle { until } | Phase::Head { until } => Some(until),
            Phase::Body { start, received } => {
                let rate = limits.min_body_rate.max(1) as u128;
                let needed_ms = (received as u128 + 1) * 1000 / rate;
                let needed = Duration::from_millis(u64::try_from(needed_ms).ok()?);
                start.checked_add(limits.body_grace)?.checked_add(needed)
            }
            Phase::Linger { until, quiet_until } => Some(until.min(quiet_until)),
            Phase::Upgraded { wait } => Instant::now().checked_add(wait),
        }
    }
}

struct State {
    phase: Phase,
    /// The read timeout last set on the socket, to skip redundant `setsockopt` calls.
    timeout: Option<Duration>,
}

/// A connection's socket and the state its readers share.
pub(crate) struct Socket {
    stream: Connection,
    limits: Arc<Limits>,
    state: Mutex<State>,
    /// Bytes of the previous request's body that the application left unread, for the
    /// connection thread to skip ([`UNREAD_UNKNOWN`] when the length is not known).
    unread: AtomicU64,
    /// A body read missed its deadline: what follows on the stream is unknown.
    broken: AtomicBool,
    /// Responses handed to the application and not yet complete (0 or 1: a connection
    /// hands over one request at a time).
    in_flight: AtomicUsize,
    /// Microseconds after the registry's epoch at which the connection became an idle
    /// keep-alive connection (plus one); 0 while it is not idle.
    idle_since: AtomicU64,
    id: u64,
    registry: Arc<Registry>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding this lock cannot leave the state half-written.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Socket {
    pub(crate) fn peer_addr(&self) -> io::Result<Option<SocketAddr>> {
        self.stream.peer_addr()
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    fn set_phase(&self, phase: Phase) {
        lock(&self.state).phase = phase;
    }

    /// The first request of a connection: its head must arrive within `head_timeout` of
    /// the accept.
    pub(crate) fn begin_first_head(&self) {
        self.set_phase(Phase::Head { until: Instant::now() + self.limits.head_timeout });
    }

    /// Between requests: the next one may take `idle_timeout` to start; meanwhile the
    /// connection may be closed to make room for a new one.
    pub(crate) fn begin_idle(&self) {
        self.set_phase(Phase::Idle { until: Instant::now() + self.limits.idle_timeout });
        let micros = u64::try_from(self.registry.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        self.idle_since.store(micros.saturating_add(1), Ordering::SeqCst);
    }

    /// A body starts (after its head, or after `100 Continue` was sent).
    pub(crate) fn begin_body(&self) {
        self.idle_since.store(0, Ordering::SeqCst);
        self.set_phase(Phase::Body { start: Instant::now(), received: 0 });
    }

    /// Before a close: read what the peer still sends for at most `linger_timeout`,
    /// stopping after two seconds of silence.
    pub(crate) fn begin_linger(&self) {
        let now = Instant::now();
        self.set_phase(Phase::Linger {
            until: now + self.limits.linger_timeout,
            quiet_until: now + Duration::from_secs(2),
        });
    }

    /// The connection now speaks another protocol: reads wait at most `wait` each.
    pub(crate) fn begin_upgraded(&self, wait: Duration) {
        self.idle_since.store(0, Ordering::SeqCst);
        self.set_phase(Phase::Upgraded { wait: wait.max(Duration::from_millis(1)) });
    }

    /// Records a body the application did not read to its end.
    pub(crate) fn note_unread(&self, remaining: u64) {
        self.unread.store(remaining, Ordering::SeqCst);
    }

    /// Takes the unread remainder noted by the previous request's body reader
    /// ([`UNREAD_UNKNOWN`] after a body read timed out: the connection cannot be reused).
    pub(crate) fn take_unread(&self) -> u64 {
        let unread = self.unread.swap(0, Ordering::SeqCst);
        if self.broken.load(Ordering::SeqCst) {
            return UNREAD_UNKNOWN;
        }
        unread
    }

    /// Answers 503 (or another refusal) on a connection no thread will serve.
    pub(crate) fn refuse(&self, status: u16, message: &str) {
        crate::refuse(&self.stream, status, message);
    }

    pub(crate) fn shutdown(&self, how: Shutdown) {
        let _ = self.stream.shutdown(how);
    }

    fn advance(&self, n: usize) {
        let mut st = lock(&self.state);
        match &mut st.phase {
            Phase::Idle { .. } if n > 0 => {
                self.idle_since.store(0, Ordering::SeqCst);
                st.phase = Phase::Head { until: Instant::now() + self.limits.head_timeout };
            }
            Phase::Body { received, .. } => *received = received.saturating_add(n as u64),
            Phase::Linger { quiet_until, .. } if n > 0 => {
                *quiet_until = Instant::now() + Duration::from_secs(2)
            }
            _ => {}
        }
    }

    /// Reads with the current phase's deadline; `TimedOut` once it has passed.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let wait = {
                let mut st = lock(&self.state);
                if let Phase::Upgraded { wait } = st.phase {
                    if st.timeout != Some(wait) {
                        st.timeout = Some(wait);
                        drop(st);
                        self.stream.set_read_timeout(Some(wait))?;
                    } else {
                        drop(st);
                    }
                    return match self.stream.read_shared(buf) {
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                            Err(ErrorKind::WouldBlock.into())
                        }
                        r => r,
                    };
                }
                let now = Instant::now();
                let wait = match st.phase.deadline(&self.limits) {
                    // A connection is not idle while its last response is still being
                    // written (a long event stream): its idle time starts over.
                    Some(deadline)
                        if deadline <= now
                            && matches!(st.phase, Phase::Idle { .. })
                            && self.in_flight.load(Ordering::SeqCst) > 0 =>
                    {
                        st.phase = Phase::Idle { until: now + self.limits.idle_timeout };
                        self.limits.idle_timeout
                    }
                    Some(deadline) if deadline <= now => {
                        if matches!(st.phase, Phase::Body { .. }) {
                            self.broken.store(true, Ordering::SeqCst);
                        }
                        return Err(io::Error::new(ErrorKind::TimedOut, "read deadline passed"));
                    }
                    Some(deadline) => deadline - now,
                    None => Duration::from_secs(3600),
                };
                // A timeout already set that ends a little after the deadline is kept: it
                // overshoots by at most 250 ms and saves a system call per read.
                let keep =
                    st.timeout.is_some_and(|set| set >= wait && set <= wait + Duration::from_millis(250));
                if keep {
                    None
                } else {
                    st.timeout = Some(wait);
                    Some(wait)
                }
            };
            if let Some(wait) = wait {
                self.stream.set_read_timeout(Some(wait))?;
            }
            match self.stream.read_shared(buf) {
                Ok(n) => {
                    self.advance(n);
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write_shared(buf)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let mut conns = self.registry.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.remove(&self.id);
    }
}

/// The live connections of a server, for the connection cap.
pub(crate) struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Weak<Socket>>>,
}

impl Registry {
    pub(crate) fn new() -> Arc<Registry> {
        Arc::new(Registry {
            epoch: Instant::now(),
            next_id: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
        })
    }

    /// The number of live connections.
    pub(crate) fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Wraps an accepted stream and counts it.
    pub(crate) fn register(self: &Arc<Self>, stream: Connection, limits: Arc<Limits>) -> Arc<Socket> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let socket = Arc::new(Socket {
            stream,
            limits,
            state: Mutex::new(State { phase: Phase::Head { until: Instant::now() }, timeout: None }),
            unread: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            id,
            registry: self.clone(),
        });
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.insert(id, Arc::downgrade(&socket));
        socket
    }

    /// Closes the connection that has waited longest for its next request, if any; its
    /// thread sees the end of the stream and leaves. True when one was closed.
    pub(crate) fn evict_idle(&self) -> bool {
        // Upgrade under the lock, choose and drop outside it: a temporary `Arc` may be the
        // last one (its connection thread let go meanwhile), and dropping a `Socket` takes
        // this same lock to unregister; under the lock that was a self-deadlock of the
        // accept thread.
        let live: Vec<Arc<Socket>> = {
            let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            conns.values().filter_map(Weak::upgrade).collect()
        };
        let oldest = live
            .iter()
            .filter(|s| s.idle_since.load(Ordering::SeqCst) != 0 && s.in_flight.load(Ordering::SeqCst) == 0)
            .min_by_key(|s| s.idle_since.load(Ordering::SeqCst));
        match oldest {
            Some(socket) => {
                socket.idle_since.store(0, Ordering::SeqCst);
                socket.shutdown(Shutdown::Both);
                true
            }
            None => false,
        }
    }
}

/// A response writer that counts as "in flight" on its connection until dropped.
pub(crate) struct Tracked<W> {
    inner: W,
    socket: Arc<Socket>,
}

impl<W> Tracked<W> {
    pub(crate) fn new(inner: W, socket: Arc<Socket>) -> Tracked<W> {
        socket.in_flight.fetch_add(1, Ordering::SeqCst);
        Tracked { inner, socket }
    }
}

impl<W: Write> Write for Tracked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Drop for Tracked<W> {
    fn drop(&mut self) {
        self.socket.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The read side of a connection; shuts the socket's read direction when dropped.
pub struct SocketReader(pub(crate) Arc<Socket>);

/// The write side of a connection; shuts the socket's write direction when dropped, which
/// ends the connection for the peer once the last response is out.
pub struct SocketWriter(pub(crate) Arc<Socket>);

impl Read for SocketReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Drop for SocketReader {
    fn drop(&mut self) {
        self.0.shutdown(Shutdown::Read);
    }
}

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SocketWriter {
    fn drop(&mut self) {
        self.0.shutdown(Shutdown::Write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { min_body_rate: 1024, body_grace: Duration::from_secs(10), ..Limits::default() }
    }

    #[test]
    fn a_body_deadline_grows_with_the_bytes_received() {
        let start = Instant::now();
        let l = limits();
        let first = Phase::Body { start, received: 0 }.deadline(&l).unwrap();
        let later = Phase::Body { start, received: 10 * 1024 }.deadline(&l).unwrap();
        assert_eq!(first - start, Duration::from_millis(10_000));
        assert_eq!(later - start, Duration::from_millis(20_000));
    }

    #[test]
    fn an_absurd_byte_count_is_a_far_deadline_instead_of_an_overflow() {
        let l = limits();
        let phase = Phase::Body { start: Instant::now(), received: u64::MAX };
        let far = Instant::now() + Duration::from_secs(1 << 40);
        assert!(phase.deadline(&l).map_or(true, |d| d > far));
    }
}
