//! The transport (our patched tiny_http) against what an attacker can send: each test is a
//! reproduction from the attack review, named after what it did to the server before.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{Resp, Server, TempDir, eventually, http, read_response};

fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c
}

/// Sends raw bytes on a new connection and reads one response.
fn raw(addr: SocketAddr, bytes: &[u8]) -> (Resp, BufReader<TcpStream>) {
    let mut c = connect(addr);
    c.write_all(bytes).unwrap();
    let mut r = BufReader::new(c);
    let resp = read_response(&mut r);
    (resp, r)
}

/// True when the peer closes the connection (EOF or reset) before `within`.
fn closed_within(r: &mut BufReader<TcpStream>, within: Duration) -> bool {
    r.get_ref().set_read_timeout(Some(within)).unwrap();
    let mut rest = Vec::new();
    match r.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

fn assert_alive(s: &mut Server) {
    assert!(s.child.try_wait().unwrap().is_none(), "the server exited\n{}", s.log());
    let r = http(s.addr, "GET", "/healthz", &[], None);
    assert_eq!(r.status, 200, "{}", s.log());
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn content_length_2_pow_64_minus_1_killed_the_process() {
    let mut s = Server::start();
    for value in ["18446744073709551615", "18446744073709551616", "9223372036854775808", "+5", "5, 6", "0x10"]
    {
        for path in ["/api/v1/api-keys", "/api/auth/login", "/healthz", "/nowhere"] {
            let req = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\nab");
            let (r, mut rest) = raw(s.addr, req.as_bytes());
            assert_eq!(r.status, 400, "Content-Length {value} on {path}: {}", r.text());
            let message = r.json()["message"].as_str().unwrap().to_owned();
            assert!(message == "Invalid Content-Length" || message == "Conflicting Content-Length values");
            assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
            assert!(closed_within(&mut rest, Duration::from_secs(8)), "closed after a framing error");
        }
    }
    // The largest legal length is refused by the route, not by a crash.
    let req = "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775807\r\n\r\n{";
    let (r, _) = raw(s.addr, req.as_bytes());
    assert_eq!(r.status, 413);
    assert_alive(&mut s);
}

#[test]
fn two_content_lengths_let_the_first_one_win() {
    let mut s = Server::start();
    let req = "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}";
    let (r, _) = raw(s.addr, req.as_bytes());
    assert_eq!((r.status, r.json()["message"].as_str()), (400, Some("Conflicting Content-Length values")));
    // Repeats of one value are the same length (RFC 9110 §8.6).
    for framing in ["Content-Length: 2, 2", "Content-Length: 2\r\nContent-Length: 2"] {
        let req =
            format!("POST /api/auth/login HTTP/1.1\r\nHost: x\r\n{framing}\r\nConnection: close\r\n\r\n{{}}");
        let (r, _) = raw(s.addr, req.as_bytes());
        assert_eq!(r.status, 401, "{framing}: {}", r.text());
    }
    assert_alive(&mut s);
}

#[test]
fn an_unparseable_content_length_ran_the_body_as_a_second_request() {
    let s = Server::start();
    let smuggled = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for value in ["abc", "", "5 5", "-1"] {
        let req =
            format!("POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n{smuggled}");
        let (r, mut rest) = raw(s.addr, req.as_bytes());
        assert_eq!(r.status, 400, "{value:?}");
        assert!(closed_within(&mut rest, Duration::from_secs(8)), "the body was not read as a request");
    }
}

#[test]
fn any_transfer_encoding_was_read_as_chunked() {
    let s = Server::start();
    let chunked = "3\r\n{}\n\r\n0\r\n\r\n";
    let cases = [
        ("Transfer-Encoding: gzip", 501),
        ("Transfer-Encoding: gzip, chunked", 501),
        ("Transfer-Encoding: chunked, identity", 501),
        ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", 501),
        ("Transfer-Encoding: chunked\r\nContent-Length: 9", 400),
    ];
    for (framing, status) in cases {
        let req = format!("POST /api/auth/login HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n{chunked}");
        let (r, mut rest) = raw(s.addr, req.as_bytes());
        assert_eq!(r.status, status, "{framing}: {}", r.text());
        assert!(closed_within(&mut rest, Duration::from_secs(8)), "{framing}");
    }
    // Plain chunked still works, and a malformed chunk size is an error, not a guess.
    let req = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunked}"
    );
    let (r, _) = raw(s.addr, req.as_bytes());
    assert_eq!(
        r.json()["message"],
        "Invalid username or password",
        "the chunked JSON body was read: {}",
        r.text()
    );
    let req = "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+3\r\n{}\n\r\n0\r\n\r\n";
    let (r, _) = raw(s.addr, req.as_bytes());
    assert_eq!(r.status, 400);
}

#[test]
fn a_tls_client_hello_hung_the_client_for_minutes() {
    let s = Server::start();
    // The first bytes of a TLS 1.2/1.3 ClientHello, as `curl https://` sends them.
    let hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x9a\x1e\x8b\x01\x02\x03";
    let started = Instant::now();
    let (r, mut rest) = raw(s.addr, hello);
    assert_eq!(r.status, 400);
    assert!(closed_within(&mut rest, Duration::from_secs(8)));
    assert!(started.elapsed() < Duration::from_secs(3), "answered at once: {:?}", started.elapsed());
}

#[test]
fn a_header_line_had_no_size_limit() {
    let mut s = Server::start();
    let pid = s.child.id();
    // Four connections each sending an endless header line: each is cut at 8 KiB.
    let endless: Vec<_> = (0..4)
        .map(|_| {
            let addr = s.addr;
            std::thread::spawn(move || {
                let mut c = connect(addr);
                c.write_all(b"GET /healthz HTTP/1.1\r\nX-Endless: ").unwrap();
                let chunk = vec![b'a'; 64 << 10];
                let mut sent = 0usize;
                while sent < 64 << 20 {
                    match c.write(&chunk) {
                        Ok(n) => sent += n,
                        Err(_) => break,
                    }
                }
                let mut r = BufReader::new(c);
                let mut status = String::new();
                let _ = r.read_line(&mut status);
                (sent, status)
            })
        })
        .collect();
    for t in endless {
        let (sent, status) = t.join().unwrap();
        assert!(sent < 64 << 20, "the server kept reading an endless header line");
        assert!(status.is_empty() || status.starts_with("HTTP/1.1 431"), "{status:?}");
    }
    // 4 × 64 MiB of header were sent at it (0.12.0 kept every byte: 2.1 GB for 500 MB lines).
    assert!(rss_kib(pid) < 64 * 1024, "RSS {} KiB", rss_kib(pid));

    let long = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n", "a".repeat(8200));
    let (r, _) = raw(s.addr, long.as_bytes());
    assert_eq!((r.status, r.json()["message"].as_str()), (431, Some("Request header line too long")));
    let long_target = format!("GET /healthz?{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(8200));
    assert_eq!(raw(s.addr, long_target.as_bytes()).0.status, 431);

    let many = |n: usize| {
        let mut req = String::from("GET /healthz HTTP/1.1\r\nConnection: close\r\n");
        for i in 1..n {
            req.push_str(&format!("X-H{i}: v\r\n"));
        }
        req.push_str("\r\n");
        raw(s.addr, req.as_bytes()).0.status
    };
    assert_eq!(many(100), 200, "100 header fields are allowed");
    assert_eq!(many(101), 431);
    let mut big = String::from("GET /healthz HTTP/1.1\r\n");
    for i in 0..90 {
        big.push_str(&format!("X-H{i}: {}\r\n", "b".repeat(800)));
    }
    big.push_str("\r\n");
    let (r, _) = raw(s.addr, big.as_bytes());
    assert_eq!((r.status, r.json()["message"].as_str()), (431, Some("Request head too large")));
    assert_alive(&mut s);
}

#[test]
fn a_slow_loris_head_held_its_connection_for_good() {
    let s = Server::start();
    let mut c = connect(s.addr);
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let mut r = BufReader::new(c);
    let resp = read_response(&mut r);
    assert_eq!(
        (resp.status, resp.json()["message"].as_str()),
        (408, Some("Request head not received in time"))
    );
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(13), "{waited:?}");
}

#[test]
fn a_slow_body_held_a_worker_for_good() {
    let s = Server::start();
    // Bodies over 1 KiB are read by a worker, smaller ones by the connection's thread: both
    // must arrive at 1 KiB/s on average after a 10 s allowance.
    let started = Instant::now();
    let slow: Vec<_> = [2000usize, 500]
        .into_iter()
        .map(|len| {
            let addr = s.addr;
            std::thread::spawn(move || {
                let mut c = connect(addr);
                write!(
                    c,
                    "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n{{\"user"
                )
                .unwrap();
                let mut r = BufReader::new(c);
                read_response(&mut r)
            })
        })
        .collect();
    for t in slow {
        let r = t.join().unwrap();
        assert_eq!(r.status, 408, "{}", r.text());
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(14), "{waited:?}");
}

#[test]
fn slow_bodies_on_every_worker_starved_healthz() {
    let s = Server::start();
    // More stalled bodies than the old pool's 512 workers.
    let mut stalled = Vec::new();
    for _ in 0..600 {
        let mut c = connect(s.addr);
        c.write_all(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n{").unwrap();
        stalled.push(c);
    }
    // Each stalled body now holds a worker; health is still answered at once.
    for _ in 0..5 {
        let started = Instant::now();
        let r = http(s.addr, "GET", "/healthz", &[], None);
        assert_eq!(r.status, 200);
        assert!(started.elapsed() < Duration::from_secs(2), "healthz took {:?}", started.elapsed());
    }
}

#[test]
fn connections_beyond_the_cap_get_503_and_idle_ones_make_room() {
    let mut s = Server::start_with(Arc::new(TempDir::new()), &["--max-connections", "20"]);
    // Twenty half-sent heads fill the cap: the next connection is refused at once.
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut c = connect(s.addr);
        c.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
        held.push(c);
    }
    assert!(eventually(5, || {
        let r = http(s.addr, "GET", "/healthz", &[], None);
        r.status == 503 && r.header("Retry-After") == Some("1")
    }));
    drop(held);
    assert!(eventually(5, || http(s.addr, "GET", "/healthz", &[], None).status == 200));

    // Twenty kept-alive idle connections: a new one closes the longest idle and is served.
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut c = connect(s.addr);
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut r = BufReader::new(c);
        assert_eq!(read_response(&mut r).status, 200);
        idle.push(r);
    }
    assert_eq!(http(s.addr, "GET", "/healthz", &[], None).status, 200);
    assert!(closed_within(&mut idle[0], Duration::from_secs(5)), "the longest idle connection was closed");
    assert_alive(&mut s);
}

#[test]
fn fd_exhaustion_killed_the_accept_loop() {
    let data = Arc::new(TempDir::new());
    let mut s = Server::start_under(data, &["prlimit", "--nofile=160:160", "--"], None, &[], &[]);
    // 0.12.0 split each connection into two descriptors: 200 half-sent requests ran the
    // process out (EMFILE), the accept thread died, and nothing was answered again.
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut c = connect(s.addr);
        let _ = c.write_all(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\n");
        held.push(c);
    }
    let r = http(s.addr, "GET", "/healthz", &[], None);
    assert!(r.status == 200 || r.status == 503, "{}", r.status);
    drop(held);
    assert!(eventually(10, || http(s.addr, "GET", "/healthz", &[], None).status == 200), "{}", s.log());
    assert!(s.log().contains("allows 96 connections"), "{}", s.log());
    assert_alive(&mut s);
}

#[test]
fn thread_exhaustion_killed_the_accept_loop() {
    // RLIMIT_NPROC counts threads per user and does not bind root: run as nobody.
    let data = Arc::new(TempDir::new());
    let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if root.ok() != Some(true) {
        eprintln!("skipped: needs root to run the server as another user");
        return;
    }
    std::fs::create_dir_all(data.path()).unwrap();
    std::os::unix::fs::chown(data.path(), Some(65534), Some(65534)).unwrap();
    let mut s = Server::start_under(data, &["prlimit", "--nproc=48:48", "--"], Some(65534), &[], &[]);
    let mut held = Vec::new();
    for _ in 0..80 {
        let mut c = connect(s.addr);
        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
        held.push(c);
    }
    let mut refused = 0;
    for c in &mut held {
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut b = [0u8; 12];
        if let Ok(n) = c.read(&mut b)
            && n > 0
        {
            assert!(b.starts_with(b"HTTP/1.1 503"), "{:?}", String::from_utf8_lossy(&b));
            refused += 1;
        }
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", s.child.id())).unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap_or_default();
    assert!(
        refused > 0,
        "thread creation never failed; the test proves nothing\n{limits}\n{status}\n{}",
        s.log()
    );
    drop(held);
    assert!(s.child.try_wait().unwrap().is_none(), "the server exited\n{}", s.log());
    assert!(eventually(10, || http(s.addr, "GET", "/healthz", &[], None).status == 200), "{}", s.log());
    assert!(s.log().contains("cannot start a connection thread"), "{}", s.log());
    assert_alive(&mut s);
}

#[test]
fn an_unread_body_up_to_1_mib_keeps_the_connection() {
    let s = Server::start();
    // A route that reads no body: the body is skipped and the connection serves the next
    // request.
    let body = vec![b'x'; 512 << 10];
    let mut c = connect(s.addr);
    write!(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    c.write_all(&body).unwrap();
    c.write_all(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = BufReader::new(c);
    assert_eq!(read_response(&mut r).status, 200);
    assert_eq!(read_response(&mut r).status, 404);

    // Beyond 1 MiB the connection is closed after the answer, which still arrives whole
    // while the client goes on sending.
    let mut c = connect(s.addr);
    let big = 8usize << 20;
    write!(c, "POST /api/v1/api-keys HTTP/1.1\r\nHost: x\r\nContent-Length: {big}\r\n\r\n").unwrap();
    let writer = c.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut w = writer;
        let chunk = vec![b'y'; 64 << 10];
        let mut sent = 0;
        while sent < big {
            match w.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
    });
    let mut r = BufReader::new(c);
    assert_eq!(read_response(&mut r).status, 413);
    assert!(closed_within(&mut r, Duration::from_secs(10)));
    sender.join().unwrap();
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = Server::start();
    let mut c = connect(s.addr);
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut r = BufReader::new(c);
    let statuses: Vec<u16> = (0..3).map(|_| read_response(&mut r).status).collect();
    assert_eq!(statuses, [200, 404, 200]);
}

#[test]
fn connection_upgrade_made_the_rest_of_the_stream_the_body() {
    let s = Server::start();
    let body = r#"{"username":"astrbot","password":"wrong-password"}"#;
    let req = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let started = Instant::now();
    let (r, _) = raw(s.addr, req.as_bytes());
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited {:?} for a body that had ended",
        started.elapsed()
    );
}

#[test]
fn connection_close_with_an_unread_body_reset_the_answer() {
    let s = Server::start();
    // `Connection: close` and a body the route refuses unread (413): the connection must
    // close only after the client has sent its body, or the reset destroys the answer.
    let body = vec![b'x'; 2 << 20];
    for _ in 0..10 {
        let mut c = connect(s.addr);
        write!(
            c,
            "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        c.write_all(&body).expect("the body was sent without a reset");
        let mut r = BufReader::new(c);
        assert_eq!(read_response(&mut r).status, 413);
    }
}

#[test]
fn evicting_while_connections_close_deadlocked_the_accept_thread() {
    // At the cap, a new connection evicts an idle one while other connections end: the
    // accept thread once dropped the last reference of a closing connection while holding
    // the registry lock that the drop takes, and never accepted again.
    let mut s = Server::start_with(Arc::new(TempDir::new()), &["--max-connections", "16"]);
    let until = Instant::now() + Duration::from_secs(8);
    let churn: Vec<_> = (0..48)
        .map(|_| {
            let addr = s.addr;
            std::thread::spawn(move || {
                let mut served = 0u32;
                while Instant::now() < until {
                    let Ok(mut c) = TcpStream::connect(addr) else { continue };
                    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                    if c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
                        continue;
                    }
                    let mut head = [0u8; 12];
                    if c.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200") {
                        served += 1;
                    }
                }
                served
            })
        })
        .collect();
    let served: u32 = churn.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(served > 100, "the churn was served ({served} answers)");
    assert!(eventually(10, || http(s.addr, "GET", "/healthz", &[], None).status == 200), "{}", s.log());
    assert_alive(&mut s);
}
