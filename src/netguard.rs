//! Containment of tiny_http 0.12's transport defects (reference `crates.md` §1), all in
//! one place so the rest of the program can treat the server as sound.
//!
//! - **Huge `Content-Length` abort.** When a request with an unread body is dropped,
//!   tiny_http's `EqualReader::drop` allocates a zeroed buffer of the whole remaining
//!   length; 10^12 bytes aborts the process. The server drops every request inside
//!   [`while_draining`], and during that window [`GuardedAlloc`] serves zeroed allocations
//!   of 1 MiB or more with a fixed 1 MiB mapping followed by a `PROT_NONE` guard. The drain
//!   only ever hands that buffer to `read(2)`, which writes at most what the socket has
//!   buffered and fails with `EFAULT` rather than write past the mapping. Bodies up to
//!   [`DRAIN_LIMIT`] are drained after the answer on a short-lived thread ([`drain_slot`]
//!   bounds them): tiny_http shuts both directions when a connection ends, and Linux
//!   answers data reaching such a socket with a reset that can destroy the answer in the
//!   client's buffer. Larger (or chunked) unread bodies: [`begin_discard`] shuts the
//!   socket's read side first, so the drain ends at once and the rest of the body is never
//!   parsed as a request, and [`Discard::linger`] keeps reading for a while before the
//!   close; a client still sending then may get a reset, which such a client has earned.
//! - **No timeouts.** [`spawn_sweeper`] gives every accepted socket a read timeout (idle
//!   keep-alive connections, stalled bodies and stalled headers all end); the listener
//!   passes `TCP_NODELAY` and a send timeout to accepted sockets. `SO_RCVTIMEO` is never
//!   set on the listener itself: Linux would apply it to `accept()` and kill tiny_http's
//!   accept thread.
//! - **One thread and two descriptors per connection.** [`raise_nofile_limit`] lifts the
//!   soft descriptor limit to the hard one at start.
//! - **A wake-up race in tiny_http's thread pool.** A new connection is queued, instead of
//!   getting a thread of its own, whenever some pool thread counts as waiting; in a burst
//!   several connections are queued for one waking thread, and those left in the queue wait
//!   until some connection thread finishes, which behind idle or slow-loris connections can
//!   be a minute. [`spawn_kicker`] sends tiny_http a throw-away connection ten times a
//!   second, and more while the pool keeps starting threads for them: when every pool
//!   thread is busy, each kick makes the pool start a thread that, after answering the
//!   kick, takes the oldest queued connection.
//!
//! Not contained: tiny_http reads a header line without a size limit, so a client can make
//! the process hold one very long header line in memory while it sends it; put a reverse
//! proxy in front of a server exposed to the internet.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Zeroed allocations at least this large are clamped while draining.
const CLAMP_FROM: usize = 1 << 20;
/// The usable size of a clamped allocation; the socket buffer is never larger in one read.
const CLAMPED_LEN: usize = 1 << 20;
/// A guard after it, a multiple of every page size Linux uses (4, 16 and 64 KiB).
const GUARD_LEN: usize = 64 << 10;
const SLOTS: usize = 8;

thread_local! {
    static DRAINING: Cell<bool> = const { Cell::new(false) };
    static CLAMPED: Cell<[usize; SLOTS]> = const { Cell::new([0; SLOTS]) };
}

/// The global allocator: the system allocator, except for tiny_http's drain buffers.
pub struct GuardedAlloc;

fn draining() -> bool {
    DRAINING.with(Cell::get)
}

fn take_clamped(ptr: *mut u8) -> bool {
    CLAMPED.with(|slots| {
        let mut s = slots.get();
        match s.iter().position(|p| *p == ptr as usize) {
            Some(i) => {
                s[i] = 0;
                slots.set(s);
                true
            }
            None => false,
        }
    })
}

unsafe fn map_clamped() -> *mut u8 {
    let free = CLAMPED.with(|slots| slots.get().iter().position(|p| *p == 0));
    let Some(slot) = free else { return std::ptr::null_mut() };
    // SAFETY: an anonymous private mapping; we own it until `munmap` in `dealloc`.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            CLAMPED_LEN + GUARD_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let guard = (p as *mut u8).add(CLAMPED_LEN) as *mut libc::c_void;
        if libc::mprotect(guard, GUARD_LEN, libc::PROT_NONE) != 0 {
            libc::munmap(p, CLAMPED_LEN + GUARD_LEN);
            return std::ptr::null_mut();
        }
        CLAMPED.with(|slots| {
            let mut s = slots.get();
            s[slot] = p as usize;
            slots.set(s);
        });
        p as *mut u8
    }
}

unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= CLAMP_FROM && layout.align() <= 4096 && draining() {
            return unsafe { map_clamped() };
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= CLAMP_FROM && take_clamped(ptr) {
            // SAFETY: `ptr` came from `map_clamped` with this length.
            unsafe { libc::munmap(ptr as *mut libc::c_void, CLAMPED_LEN + GUARD_LEN) };
            return;
        }
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let clamped = layout.size() >= CLAMP_FROM && CLAMPED.with(|s| s.get().contains(&(ptr as usize)));
        if clamped {
            // A drain buffer is never grown; refusing is the safe answer.
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` (which drops a tiny_http request) with drain buffers clamped.
pub fn while_draining<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DRAINING.with(|d| d.set(false));
        }
    }
    DRAINING.with(|d| d.set(true));
    let _reset = Reset;
    f()
}

/// Makes glibc serve allocations of 1 MiB or more from their own mappings and unmap them
/// when freed (by default glibc raises that threshold after the first large free, so the
/// 19 MiB argon2 buffer of one login would stay in the process for good), and caps its
/// malloc arenas at two.
pub fn return_large_frees_to_the_os() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes an allocator setting.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        // One thread per connection: without a cap glibc gives busy threads arenas of their
        // own (up to 8 per core), each holding freed memory.
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Lifts the soft open-files limit to the hard limit (each connection costs two).
pub fn raise_nofile_limit() {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                log::warn!("cannot raise the open-files limit: {}", io::Error::last_os_error());
            }
        }
    }
}

fn set_int_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt with a pointer to a local int of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Options that accepted sockets inherit from the listener on Linux: `TCP_NODELAY` (SSE
/// events and small answers go out at once) and a send timeout (a client that stops
/// reading cannot hold a thread forever).
pub fn tune_listener(listener: &TcpListener, send_timeout: Duration) -> io::Result<()> {
    let fd = listener.as_raw_fd();
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    // SAFETY: a borrowed view of the listener's descriptor, never closed here.
    let view = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
    view.set_write_timeout(Some(send_timeout))
}

/// Visits every connected TCP socket of this process accepted on `listen`.
fn for_each_accepted(listen: SocketAddr, mut f: impl FnMut(RawFd, &TcpStream) -> bool) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok()) else { continue };
        if fd <= 2 {
            continue;
        }
        // SAFETY: a borrowed view of a descriptor of ours; `ManuallyDrop` never closes it.
        // On anything but a TCP socket the calls below fail harmlessly (ENOTSOCK, EBADF).
        let view = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
        let Ok(local) = view.local_addr() else { continue };
        let ours =
            local.port() == listen.port() && (listen.ip().is_unspecified() || local.ip() == listen.ip());
        if ours && !f(fd, &view) {
            return;
        }
    }
}

/// Unread bodies up to this size are drained after the answer rather than cut off.
pub const DRAIN_LIMIT: usize = 256 << 20;
const MAX_DRAINING: usize = 64;
static DRAINING_NOW: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A place among the bounded number of drains running at once; freed on drop.
pub struct DrainSlot(());

impl Drop for DrainSlot {
    fn drop(&mut self) {
        DRAINING_NOW.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A drain slot, or `None` when too many drains run (then the connection is cut instead).
pub fn drain_slot() -> Option<DrainSlot> {
    if DRAINING_NOW.fetch_add(1, Ordering::SeqCst) >= MAX_DRAINING {
        DRAINING_NOW.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    Some(DrainSlot(()))
}

/// A connection whose request body we will not read, on its way to a lingering close.
pub struct Discard(TcpStream);

/// Lingering closes running at once; beyond this the connection is simply closed.
static LINGERING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
const MAX_LINGERING: usize = 64;

/// Prepares to refuse the body of the connection from `peer`: keeps our own handle on the
/// socket and shuts its read side, so tiny_http's drain ends at once and nothing after the
/// body is parsed as a request. Call [`Discard::linger`] after the answer is written.
pub fn begin_discard(listen: SocketAddr, peer: SocketAddr) -> Option<Discard> {
    let mut found = None;
    for_each_accepted(listen, |_, view| {
        if view.peer_addr().ok() == Some(peer) {
            // SAFETY: shutdown(2) on a live socket; try_clone dups the descriptor we own.
            unsafe { libc::shutdown(view.as_raw_fd(), libc::SHUT_RD) };
            found = view.try_clone().ok();
            return false;
        }
        true
    });
    found.map(Discard)
}

impl Discard {
    /// Closes the connection only after the client has had time to read our answer: the
    /// bytes it still sends are read and dropped until it is quiet for two seconds (or 15 s
    /// or 64 MiB pass). Closing with unread bytes would send a reset that can destroy the
    /// answer in the client's buffer.
    pub fn linger(self) {
        if LINGERING.fetch_add(1, Ordering::SeqCst) >= MAX_LINGERING {
            LINGERING.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let Discard(mut stream) = self;
        let spawned = std::thread::Builder::new().name("linger".into()).spawn(move || {
            let started = std::time::Instant::now();
            let mut quiet = Duration::ZERO;
            let mut total = 0usize;
            let mut buf = [0u8; 16 << 10];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            while quiet < Duration::from_secs(2)
                && started.elapsed() < Duration::from_secs(15)
                && total < 64 << 20
            {
                match std::io::Read::read(&mut stream, &mut buf) {
                    // After SHUT_RD, 0 means "nothing queued right now", not the end.
                    Ok(0) => {
                        std::thread::sleep(Duration::from_millis(25));
                        quiet += Duration::from_millis(25);
                    }
                    Ok(n) => {
                        total += n;
                        quiet = Duration::ZERO;
                    }
                    Err(_) => break,
                }
            }
            let _ = stream.shutdown(std::net::Shutdown::Both);
            LINGERING.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            LINGERING.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Every second, gives accepted sockets that have none a read timeout of `idle`.
pub fn spawn_sweeper(listen: SocketAddr, idle: Duration, stop: Arc<AtomicBool>) -> io::Result<()> {
    std::thread::Builder::new().name("sweeper".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            for_each_accepted(listen, |_, view| {
                if view.peer_addr().is_ok() && matches!(view.read_timeout(), Ok(None)) {
                    let _ = view.set_read_timeout(Some(idle));
                }
                true
            });
            std::thread::sleep(Duration::from_secs(1));
        }
    })?;
    Ok(())
}

/// Whether at least `n` descriptors of accepted connections are open (each connection
/// holds two); stops counting at `n`, so it stays cheap with thousands of connections.
fn accepted_at_least(listen: SocketAddr, n: usize) -> bool {
    let mut seen = 0;
    for_each_accepted(listen, |_, view| {
        if view.peer_addr().is_ok() {
            seen += 1;
        }
        seen < n
    });
    seen >= n
}

/// The number of threads of this process.
fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0)
}

/// One kick: a connection to ourselves carrying a line that is not a request, so that
/// tiny_http answers 400 and closes. True once that answer came back within `patience`
/// (a pool thread took the connection); false if the kick itself was queued.
fn kick(target: SocketAddr, patience: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&target, Duration::from_millis(500)) else {
        return false;
    };
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt with a pointer to a local `linger` of the right size. Linger 0 makes
    // the close a reset, so kicks leave no TIME_WAIT sockets behind.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = stream.set_read_timeout(Some(patience));
    if std::io::Write::write_all(&mut stream, b"KICK\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(std::io::Read::read(&mut stream, &mut buf), Ok(n) if n > 0)
}

/// Keeps tiny_http's pool from leaving connections queued (see the module documentation).
/// Ten times a second it kicks once; while kicks make the pool start threads (no thread was
/// waiting, so connections may be queued behind busy ones) or are not answered at once, it
/// keeps kicking, each kick's new thread taking one queued connection after the kick.
pub fn spawn_kicker(listen: SocketAddr, stop: Arc<AtomicBool>) -> io::Result<()> {
    let target = if listen.ip().is_unspecified() {
        let loopback: std::net::IpAddr =
            if listen.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
        SocketAddr::new(loopback, listen.port())
    } else {
        listen
    };
    std::thread::Builder::new().name("kicker".into()).spawn(move || {
        // Starvation needs every pool thread (at least four) busy with a connection; with
        // fewer connections open there is nothing to rescue, so an idle server is not woken
        // ten times a second.
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            if !accepted_at_least(listen, 6) {
                continue;
            }
            for _ in 0..1024 {
                let before = thread_count();
                let answered = kick(target, Duration::from_millis(50));
                if answered && thread_count() <= before {
                    break;
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn clamped_zeroed_allocations_are_usable_for_reads_and_freed() {
        let (a, mut b) = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            (c, l.accept().unwrap().0)
        };
        b.write_all(b"hello").unwrap();
        let mut a = a;
        let n = while_draining(|| {
            // What tiny_http's drain does with a Content-Length of 10^12.
            let mut buf = vec![0u8; 1_000_000_000_000usize];
            a.read(&mut buf).unwrap()
        });
        assert_eq!(n, 5);
        assert!(CLAMPED.with(|s| s.get().iter().all(|p| *p == 0)), "mapping released");
        // Outside the window, zeroed allocations are ordinary.
        let v = vec![0u8; 2 << 20];
        assert!(v.iter().all(|b| *b == 0));
    }

    #[test]
    fn discard_finds_the_connection_and_lingers_until_the_client_is_done() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = l.local_addr().unwrap();
        let mut client = TcpStream::connect(listen).unwrap();
        let (mut server_side, peer) = l.accept().unwrap();
        let discard = begin_discard(listen, peer).expect("found by peer address");
        // After SHUT_RD the server side reads 0 while nothing is queued.
        assert_eq!(server_side.read(&mut [0u8; 8]).unwrap(), 0);
        server_side.write_all(b"413").unwrap();
        drop(server_side);
        discard.linger();
        // The client may go on sending its body without a reset, then read the answer.
        client.write_all(&vec![b'x'; 1 << 20]).unwrap();
        let mut answer = [0u8; 3];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"413");
    }
}
