//! The webhook mirror (decision 16, issue 9): every request made with a key that has a
//! `webhook_url`, and its response, reach a loopback receiver (`receiver`) as one signed
//! Standard Webhooks event, through the outbox: JSON and streamed chats, uploads and
//! refusals; no credential in any event; a failing, hanging or absent receiver slows
//! nothing and loses nothing, across a restart and a `kill -9`; the secret is shown once
//! and rotated; deliveries are listed and retried by hand with the same `webhook-id`.
//!
//! The server runs with `ASTRBOT_WEBHOOK_BACKOFF_MS=50,100,200`, so a retry comes within a
//! fifth of a second instead of the production schedule (5 s, 30 s, 2 min, ...). When the
//! `standardwebhooks` Python package is importable (by `$ASTRBOT_TEST_PYTHON`, else
//! `python3`), events are also verified by it; otherwise that check prints why it skipped.

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::astroworld::{QUESTION, create, website_bot};
use crate::receiver::{Received, Receiver};
use crate::support::{PNG, Server, TempDir, bearer, eventually, upload};

const BACKOFF: [(&str, &str); 1] = [("ASTRBOT_WEBHOOK_BACKOFF_MS", "50,100,200")];

fn start(data: Arc<TempDir>) -> Server {
    Server::start_with_env(data, &[], &BACKOFF)
}

/// A key whose events go to `url`.
struct Hooked {
    key: String,
    key_id: String,
    secret: String,
}

/// Creates a key with the default scopes and `webhook_url` `url`.
fn hooked(s: &Server, admin: &str, url: &str) -> Hooked {
    let (key, key_id, data) = create(s, admin, json!({"name": "mirrored", "webhook_url": url}));
    let secret = data["webhook_secret"]
        .as_str()
        .unwrap_or_else(|| panic!("no webhook_secret at create: {data}"))
        .to_owned();
    assert_eq!(data["webhook_url"], url, "{data}");
    Hooked { key, key_id, secret }
}

/// `GET .../webhook/deliveries` as the admin: `data`.
fn deliveries(s: &Server, admin: &str, key_id: &str, limit: usize) -> Value {
    let r =
        s.call("GET", &format!("/api/v1/api-keys/{key_id}/webhook/deliveries?limit={limit}"), admin, None);
    s.expect(&r, 200);
    r.json()["data"].clone()
}

/// The delivery of event `event_id`, if listed.
fn delivery(s: &Server, admin: &str, key_id: &str, event_id: &str) -> Option<Value> {
    let d = deliveries(s, admin, key_id, 100);
    d["deliveries"].as_array().unwrap().iter().find(|x| x["event_id"] == event_id).cloned()
}

/// Polls the deliveries until `event_id`'s satisfies `done` (10 s); returns it.
#[track_caller]
fn wait_delivery(
    s: &Server,
    admin: &str,
    key_id: &str,
    event_id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = None;
    let ok = eventually(10, || {
        last = delivery(s, admin, key_id, event_id);
        last.as_ref().is_some_and(&done)
    });
    assert!(ok, "delivery of {event_id} never reached the expected state; last seen: {last:?}\n{}", s.log());
    last.unwrap()
}

/// A GET made with `key` that costs the server nothing, told apart by `n` in its query.
fn cheap(s: &Server, key: &str, n: usize) -> crate::support::Resp {
    s.call("GET", &format!("/api/v1/chat/sessions?username=visitor&n={n}"), key, None)
}

/// The `n` of a [`cheap`] request's event.
fn n_of(event: &Value) -> Option<usize> {
    event["data"]["query"]["n"].as_str()?.parse().ok()
}

/// Asserts the envelope of an event and its signature with `secret`; returns `data`.
#[track_caller]
fn check_event(q: &Received, secret: &str, key_id: &str) -> Value {
    q.verify(secret).unwrap_or_else(|e| panic!("bad signature: {e}\n{}", q.describe()));
    assert_eq!(q.method, "POST");
    assert!(q.id().starts_with("msg_") && q.id().len() > 20, "webhook-id {:?}", q.id());
    assert!(q.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{}", q.describe());
    assert!(q.header("authorization").is_none(), "{}", q.describe());
    let v = q.json();
    assert_eq!(v["type"], "api.request", "{v}");
    let ts = v["timestamp"].as_str().unwrap_or_default();
    assert!(
        ts.len() >= 20 && &ts[10..11] == "T" && (ts.ends_with('Z') || ts.ends_with("+00:00")),
        "timestamp {ts:?}"
    );
    let data = v["data"].clone();
    let mut fields: Vec<&str> = data.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(
        fields,
        ["duration_ms", "key_id", "method", "path", "query", "request", "response", "status"],
        "{v}"
    );
    assert_eq!(data["key_id"], key_id);
    assert!(data["duration_ms"].as_u64().is_some(), "{v}");
    assert!(data["query"].is_object(), "{v}");
    data
}

// ---------------------------------------------------------------------------------------
// The standardwebhooks Python package, when present

const PY_VERIFY: &str = r#"import json, sys
from standardwebhooks import Webhook
secret, body_path, headers_path = sys.argv[1:4]
body = open(body_path, "rb").read()
headers = json.load(open(headers_path))
print(json.dumps(Webhook(secret).verify(body, headers)))
"#;

/// The interpreter that has `standardwebhooks`, or `None` (said once per call site).
fn python_with_standardwebhooks() -> Option<String> {
    let python = std::env::var("ASTRBOT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!(
            "skipped the standardwebhooks check: {python} cannot import standardwebhooks (pip install standardwebhooks, or set ASTRBOT_TEST_PYTHON)"
        );
        return None;
    }
    Some(python)
}

/// Runs `Webhook(secret).verify(body, headers)` of the Python package on a received event;
/// returns the parsed payload, or the exception's text.
fn python_verify(python: &str, secret: &str, q: &Received) -> Result<Value, String> {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path()).unwrap();
    let headers: BTreeMap<&str, &str> = q.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    std::fs::write(dir.path().join("verify.py"), PY_VERIFY).unwrap();
    std::fs::write(dir.path().join("body"), &q.body).unwrap();
    std::fs::write(dir.path().join("headers.json"), serde_json::to_string(&headers).unwrap()).unwrap();
    let out = Command::new(python)
        .arg(dir.path().join("verify.py"))
        .arg(secret)
        .arg(dir.path().join("body"))
        .arg(dir.path().join("headers.json"))
        .output()
        .unwrap();
    match out.status.success() {
        true => serde_json::from_slice(&out.stdout).map_err(|e| e.to_string()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// Verifies `q` with the Python package when it is installed, and shows that a tampered
/// body fails there too.
fn verify_with_python(python: Option<&str>, secret: &str, q: &Received) {
    let Some(python) = python else { return };
    let payload = python_verify(python, secret, q)
        .unwrap_or_else(|e| panic!("standardwebhooks refused {}: {e}", q.describe()));
    assert_eq!(payload, q.json());
    let mut tampered = q.clone();
    tampered.body.extend_from_slice(b" ");
    assert!(python_verify(python, secret, &tampered).is_err(), "standardwebhooks accepted a tampered body");
}

const PY_SIGN: &str = r#"import datetime, sys
from standardwebhooks import Webhook
secret, msg_id, body = sys.argv[1:4]
now = datetime.datetime.now(datetime.timezone.utc)
print(int(now.timestamp()))
print(Webhook(secret).sign(msg_id, now, body))
"#;

/// The receiver's own check ([`crate::receiver::verify`]) accepts what the reference
/// library signs and refuses what it would refuse, so the other tests' signature checks
/// mean what they say even where Python is missing.
#[test]
fn the_receivers_check_agrees_with_standardwebhooks() {
    let Some(python) = python_with_standardwebhooks() else { return };
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let body = r#"{"type": "api.request", "data": {"status": 200}}"#;
    let out = Command::new(&python).args(["-c", PY_SIGN, secret, "msg_reference", body]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (ts, sig) = text.trim().split_once('\n').unwrap();
    assert_eq!(crate::receiver::verify(secret, "msg_reference", ts, body.as_bytes(), sig), Ok(()));
    assert!(crate::receiver::verify(secret, "msg_reference", ts, b"{}", sig).is_err());
    assert!(crate::receiver::verify(secret, "msg_other", ts, body.as_bytes(), sig).is_err());
    let received = Received {
        method: "POST".into(),
        path: "/hook".into(),
        headers: vec![
            ("webhook-id".into(), "msg_reference".into()),
            ("webhook-timestamp".into(), ts.into()),
            ("webhook-signature".into(), sig.into()),
        ],
        body: body.as_bytes().to_vec(),
        answered: Some(200),
    };
    verify_with_python(Some(&python), secret, &received);
}

// ---------------------------------------------------------------------------------------
// Secrets

#[test]
fn a_webhook_key_gets_its_secret_once() {
    let s = start(Arc::new(TempDir::new()));
    let admin = s.admin_token();
    let receiver = Receiver::start();
    let h = hooked(&s, &admin, &receiver.url());
    let raw = h.secret.strip_prefix("whsec_").unwrap();
    use base64::Engine;
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(raw).unwrap_or_else(|e| panic!("{e}: {raw}"));
    assert_eq!(bytes.len(), 32, "a 32-byte secret");

    let list = s.call("GET", "/api/v1/api-keys", &admin, None);
    assert!(!list.text().contains(&h.secret) && !list.text().contains(raw), "a listing shows the secret");
    assert!(!list.text().contains("webhook_secret"));
    let listed = crate::astroworld::listed(&s, &admin, &h.key_id);
    assert_eq!(listed["webhook_url"], receiver.url());

    // A key without a webhook has no secret.
    let (_, _, plain) = create(&s, &admin, json!({"name": "plain"}));
    assert!(plain.get("webhook_secret").is_none_or(Value::is_null), "{plain}");

    // Rotation is for the admin only, and for known keys.
    let rotate = format!("/api/v1/api-keys/{}/webhook/rotate", h.key_id);
    s.check_error("POST", &rotate, &h.key, None, 403, "Insufficient API key scope");
    s.check_error(
        "POST",
        "/api/v1/api-keys/no-such-key/webhook/rotate",
        &admin,
        None,
        404,
        "API key not found",
    );
    s.check_error(
        "GET",
        "/api/v1/api-keys/no-such-key/webhook/deliveries",
        &admin,
        None,
        404,
        "API key not found",
    );
    s.check_error(
        "GET",
        &format!("/api/v1/api-keys/{}/webhook/deliveries", h.key_id),
        &h.key,
        None,
        403,
        "Insufficient API key scope",
    );
    let r =
        s.check("POST", &rotate, &admin, None, 200, json!({"status": "ok", "data": {"key_id": h.key_id}}));
    let rotated = r.json()["data"]["webhook_secret"].as_str().unwrap().to_owned();
    assert!(rotated.starts_with("whsec_") && rotated != h.secret, "{rotated}");
}

#[test]
fn rotation_signs_later_events_with_the_new_secret_only() {
    let s = start(Arc::new(TempDir::new()));
    let admin = s.admin_token();
    let receiver = Receiver::start();
    let h = hooked(&s, &admin, &receiver.url());
    s.expect(&cheap(&s, &h.key, 1), 200);
    let before = receiver.wait_for_event(10, "the event before rotation", |v| n_of(v) == Some(1));
    assert_eq!(before.verify(&h.secret), Ok(()));

    let r = s.call("POST", &format!("/api/v1/api-keys/{}/webhook/rotate", h.key_id), &admin, None);
    s.expect(&r, 200);
    let rotated = r.json()["data"]["webhook_secret"].as_str().unwrap().to_owned();
    s.expect(&cheap(&s, &h.key, 2), 200);
    let after = receiver.wait_for_event(10, "the event after rotation", |v| n_of(v) == Some(2));
    assert_eq!(after.verify(&rotated), Ok(()), "{}", after.describe());
    assert!(after.verify(&h.secret).is_err(), "the old secret still verifies a later event");
    assert!(before.verify(&rotated).is_err());
}

// ---------------------------------------------------------------------------------------
// What an event carries

#[test]
fn events_mirror_json_and_streamed_chats_uploads_and_refusals() {
    let python = python_with_standardwebhooks();
    let s = start(Arc::new(TempDir::new()));
    let admin = s.admin_token();
    let bot = website_bot(&s, &admin);
    let receiver = Receiver::start();
    let h = hooked(&s, &admin, &receiver.url());
    let auth = bearer(&h.key);
    let json_headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
        ("Accept", "application/json"),
    ];

    // A JSON chat, AstrBot's shape.
    let sent = json!({"username": "alice", "session_id": "json-1", "message": QUESTION});
    let r = s.request("POST", "/api/v1/chat", &json_headers, Some(&sent.to_string()));
    s.expect(&r, 200);
    let q = receiver.wait_for_event(10, "the JSON chat's event", |v| v["data"]["request"] == sent);
    let d = check_event(&q, &h.secret, &h.key_id);
    assert_eq!(
        (d["method"].clone(), d["path"].clone(), d["status"].clone()),
        (json!("POST"), json!("/api/v1/chat"), json!(200))
    );
    assert_eq!(d["query"], json!({}));
    assert_eq!(d["response"], r.json(), "the response is the body the client got");
    verify_with_python(python.as_deref(), &h.secret, &q);

    // A JSON chat, Astroworld's shape.
    let sent = json!({"bot_id": bot, "message": QUESTION});
    let r = s.request("POST", "/api/v1/chat", &json_headers, Some(&sent.to_string()));
    s.expect(&r, 200);
    let q = receiver.wait_for_event(10, "the Astroworld chat's event", |v| v["data"]["request"] == sent);
    let d = check_event(&q, &h.secret, &h.key_id);
    assert_eq!(d["response"], r.json());
    assert!(d["response"]["session_id"].as_str().unwrap().starts_with("api-"));

    // A streamed chat: the event has the whole reply, the session and the message id.
    let sent = json!({"username": "alice", "session_id": "stream-1", "message": QUESTION});
    let r = s.call("POST", "/api/v1/chat", &h.key, Some(sent.clone()));
    s.expect(&r, 200);
    let events: Vec<Value> = r
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let complete = events.iter().find(|e| e["type"] == "complete").unwrap_or_else(|| panic!("{}", r.text()));
    let q = receiver.wait_for_event(10, "the streamed chat's event", |v| v["data"]["request"] == sent);
    let d = check_event(&q, &h.secret, &h.key_id);
    assert_eq!(d["status"], 200);
    let response = &d["response"];
    assert_eq!(response["response"], complete["data"], "{response}");
    assert_eq!(response["session_id"], "stream-1");
    assert_eq!(response["message_id"], complete["message_id"]);
    verify_with_python(python.as_deref(), &h.secret, &q);

    // An upload: the file's name, type and size, never its bytes.
    let r = upload(&s, &h.key, "/api/v1/file", &[("file", Some("pixel.png"), Some("image/png"), PNG)]);
    s.expect(&r, 200);
    let q = receiver.wait_for_event(10, "the upload's event", |v| v["data"]["path"] == "/api/v1/file");
    let d = check_event(&q, &h.secret, &h.key_id);
    assert_eq!(
        d["request"],
        json!({"filename": "pixel.png", "content_type": "image/png", "size": PNG.len()})
    );
    assert_eq!(d["response"], r.json());
    assert_eq!(d["status"], 200);
    verify_with_python(python.as_deref(), &h.secret, &q);

    // A refusal: its real status and its envelope.
    let sent = json!({"bot_id": bot});
    let r = s.request("POST", "/api/v1/chat", &json_headers, Some(&sent.to_string()));
    s.expect(&r, 400);
    let q = receiver.wait_for_event(10, "the refusal's event", |v| v["data"]["request"] == sent);
    let d = check_event(&q, &h.secret, &h.key_id);
    assert_eq!(d["status"], 400);
    assert_eq!(d["response"], r.json());
}

#[test]
fn no_credential_reaches_an_event() {
    let s = start(Arc::new(TempDir::new()));
    let admin = s.admin_token();
    let receiver = Receiver::start();
    let h = hooked(&s, &admin, &receiver.url());
    // The key in each place a client may put it.
    let by_query = |param: &str, n: usize| {
        let r = s.get(&format!("/api/v1/chat/sessions?username=visitor&{param}={}&n={n}", h.key), &[]);
        s.expect(&r, 200);
    };
    by_query("api_key", 1);
    by_query("key", 2);
    s.expect(&s.get("/api/v1/chat/sessions?username=visitor&n=3", &[("X-API-Key", &h.key)]), 200);
    s.expect(
        &s.get(
            "/api/v1/chat/sessions?username=visitor&n=4",
            &[("Authorization", &format!("ApiKey {}", h.key))],
        ),
        200,
    );
    s.expect(&cheap(&s, &h.key, 5), 200);
    // A vendor key in a request body is masked.
    let vendor_secret = "sk-mirror-test-SECRET-0123456789";
    let source = json!({"id": "vendor", "type": "openai_chat_completion", "key": [vendor_secret]});
    s.expect(&s.call("POST", "/api/v1/provider-sources", &h.key, Some(source)), 200);

    receiver.wait_for_event(10, "the provider source's event", |v| {
        v["data"]["path"] == "/api/v1/provider-sources"
    });
    let all = receiver.wait_until(10, "five keyed GETs", |r| {
        let ns: HashSet<usize> = r.iter().filter(|q| q.delivered()).filter_map(|q| n_of(&q.json())).collect();
        (1..=5).all(|n| ns.contains(&n))
    });
    for q in &all {
        let d = check_event(q, &h.secret, &h.key_id);
        if n_of(&q.json()).is_some() {
            let n = d["query"]["n"].clone();
            assert_eq!(
                d["query"],
                json!({"username": "visitor", "n": n}),
                "credential parameters are removed"
            );
        }
        let head: String = q.headers.iter().map(|(n, v)| format!("{n}: {v}\n")).collect();
        for (secret, what) in [
            (h.key.as_str(), "the raw key"),
            (admin.as_str(), "the admin token"),
            (vendor_secret, "the vendor key"),
            ("Bearer", "an Authorization value"),
            ("ApiKey ", "an Authorization value"),
        ] {
            assert!(!q.text().contains(secret), "{what} in an event body: {}", q.describe());
            assert!(!head.contains(secret), "{what} in an event header: {}", q.describe());
        }
    }
}

#[test]
fn events_of_a_key_arrive_in_the_order_of_their_requests() {
    let s = start(Arc::new(TempDir::new()));
    let admin = s.admin_token();
    let receiver = Receiver::start();
    let h = hooked(&s, &admin, &receiver.url());
    for n in 0..10 {
        s.expect(&cheap(&s, &h.key, n), 200);
    }
    let delivered = receiver.wait_delivered(10, 20);
    let order: Vec<usize> = delivered.iter().filter_map(|q| n_of(&q.json())).collect();
    assert_eq!(order, (0..10).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------
// Failing, hanging and absent receivers

#[test]
fn a_failing_receiver_gets_the_event_once_it_answers() {
    let s = start(Arc::new(TempDir::new()));
    let admin = s.admin_token();
    let receiver = Receiver::start();
    let h = hooked(&s, &admin, &receiver.url());
    receiver.fail_next(3);
    s.expect(&cheap(&s, &h.key, 1), 200);
    let q = receiver.wait_for_event(20, "the event after three 500s", |v| n_of(v) == Some(1));
    check_event(&q, &h.secret, &h.key_id);
    let attempts: Vec<Received> = receiver.requests().into_iter().filter(|r| r.id() == q.id()).collect();
    let statuses: Vec<Option<u16>> = attempts.iter().map(|a| a.answered).collect();
    assert_eq!(
        statuses,
        [Some(500), Some(500), Some(500), Some(200)],
        "every attempt carries the same webhook-id"
    );
    for a in &attempts {
        assert_eq!(a.verify(&h.secret), Ok(()), "each attempt is signed anew");
        assert_eq!(a.body, q.body, "each attempt carries the same event");
    }

    let d = wait_delivery(&s, &admin, &h.key_id, q.id(), |d| d["status"] == "delivered");
    assert_eq!((d["attempts"].clone(), d["response_code"].clone()), (json!(4), json!(200)), "{d}");
    assert!(d["delivered_at"].is_string() && d["last_attempt_at"].is_string(), "{d}");
    assert_eq!(d["next_attempt_at"], Value::Null, "{d}");
    let all = deliveries(&s, &admin, &h.key_id, 50);
    assert_eq!((all["pending"].clone(), all["dropped"].clone()), (json!(0), json!(0)), "{all}");
}

#[test]
fn a_hanging_receiver_slows_no_request_and_loses_no_event() {
    let s = start(Arc::new(TempDir::new()));
    let admin = s.admin_token();
    let receiver = Receiver::start();
    let h = hooked(&s, &admin, &receiver.url());
    receiver.hang();
    s.expect(&cheap(&s, &h.key, 0), 200);
    receiver.wait_until(10, "a delivery attempt to hang", |r| !r.is_empty());

    let mut slowest = Duration::ZERO;
    for n in 1..=50 {
        let started = Instant::now();
        s.expect(&cheap(&s, &h.key, n), 200);
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_millis(500), "a request took {slowest:?} while the receiver hung");
    println!("slowest of 50 requests while the receiver hung: {slowest:?}");

    receiver.answer_ok();
    let delivered = receiver.wait_delivered(51, 60);
    let ns: HashSet<usize> = delivered.iter().filter_map(|q| n_of(&q.json())).collect();
    assert_eq!(ns, (0..=50).collect::<HashSet<_>>());
    for q in &delivered {
        check_event(q, &h.secret, &h.key_id);
    }
}

#[test]
fn events_wait_for_a_receiver_that_is_down_across_a_restart() {
    let data = Arc::new(TempDir::new());
    let s = start(data.clone());
    let admin = s.admin_token();
    let receiver = Receiver::down();
    let h = hooked(&s, &admin, &receiver.url());
    for n in 0..3 {
        s.expect(&cheap(&s, &h.key, n), 200);
    }
    // Stopped at once: the events still queued in memory are written at shutdown.
    assert!(s.terminate().success());

    receiver.up();
    let s = start(data);
    let delivered = receiver.wait_delivered(3, 30);
    let ns: Vec<usize> = delivered.iter().filter_map(|q| n_of(&q.json())).collect();
    assert_eq!(ns, [0, 1, 2]);
    for q in &delivered {
        check_event(q, &h.secret, &h.key_id);
    }
    let admin = s.admin_token();
    for q in &delivered {
        wait_delivery(&s, &admin, &h.key_id, q.id(), |d| d["status"] == "delivered");
    }
}

#[test]
fn kill_9_with_200_undelivered_events_loses_none() {
    const EVENTS: usize = 200;
    let data = Arc::new(TempDir::new());
    let mut s = start(data.clone());
    let admin = s.admin_token();
    let receiver = Receiver::down();
    let h = hooked(&s, &admin, &receiver.url());
    for n in 0..EVENTS {
        s.expect(&cheap(&s, &h.key, n), 200);
    }
    // Every event is in the outbox (the database), none delivered.
    let mut last = Value::Null;
    let written = eventually(10, || {
        last = deliveries(&s, &admin, &h.key_id, 10);
        last["pending"] == EVENTS
    });
    assert!(written, "not all {EVENTS} events reached the outbox: {last}");
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    drop(s);

    receiver.up();
    let s = start(data);
    let delivered = receiver.wait_delivered(EVENTS, 60);
    assert_eq!(delivered.len(), EVENTS, "no extra event ids");
    // Each request's event arrived, and every copy of it carries one webhook-id.
    let mut ids_of: BTreeMap<usize, HashSet<String>> = BTreeMap::new();
    for q in receiver.requests().iter().filter(|q| q.delivered()) {
        let n = n_of(&q.json()).unwrap_or_else(|| panic!("an unexpected event: {}", q.describe()));
        q.verify(&h.secret).unwrap_or_else(|e| panic!("{e}: {}", q.describe()));
        ids_of.entry(n).or_default().insert(q.id().to_owned());
    }
    assert_eq!(ids_of.keys().copied().collect::<Vec<_>>(), (0..EVENTS).collect::<Vec<_>>());
    let repeated: Vec<_> = ids_of.iter().filter(|(_, ids)| ids.len() != 1).collect();
    assert!(repeated.is_empty(), "a repeat carries another webhook-id: {repeated:?}");
    let admin = s.admin_token();
    assert!(eventually(10, || deliveries(&s, &admin, &h.key_id, 10)["pending"] == 0), "events still pending");
}

#[test]
fn a_failed_delivery_is_redelivered_by_hand_with_its_id() {
    let data = Arc::new(TempDir::new());
    let s = start(data.clone());
    let admin = s.admin_token();
    let receiver = Receiver::start();
    let h = hooked(&s, &admin, &receiver.url());
    receiver.fail_next(usize::MAX);
    s.expect(&cheap(&s, &h.key, 1), 200);
    let first = receiver.wait_until(10, "a failed attempt", |r| r.iter().any(|q| q.answered == Some(500)));
    let id = first.iter().find(|q| q.answered == Some(500)).unwrap().id().to_owned();
    let d = wait_delivery(&s, &admin, &h.key_id, &id, |d| d["attempts"].as_i64() >= Some(1));
    assert_eq!((d["status"].clone(), d["response_code"].clone()), (json!("pending"), json!(500)), "{d}");
    assert!(d["next_attempt_at"].is_string(), "{d}");

    // Its 24 hours pass (the deadline is moved into the past while the server is stopped).
    assert!(s.terminate().success());
    let conn = rusqlite::Connection::open(data.path().join("astrbot.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let past = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros()
        as i64)
        - 1_000_000;
    let aged = conn
        .execute("UPDATE webhook_events SET deadline = ?1 WHERE event_id = ?2", rusqlite::params![past, id])
        .unwrap();
    assert_eq!(aged, 1, "the event is in webhook_events");
    drop(conn);
    let s = start(data);
    let admin = s.admin_token();
    let failed = wait_delivery(&s, &admin, &h.key_id, &id, |d| d["status"] == "failed");
    assert_eq!(failed["next_attempt_at"], Value::Null, "{failed}");
    let delivery_id = failed["id"].as_i64().unwrap();

    // Retried by hand once the receiver is well: the same webhook-id arrives.
    receiver.answer_ok();
    let retry = format!("/api/v1/api-keys/{}/webhook/deliveries/{delivery_id}/retry", h.key_id);
    s.check_error("POST", &retry, &h.key, None, 403, "Insufficient API key scope");
    let r = s.check(
        "POST",
        &retry,
        &admin,
        None,
        200,
        json!({"status": "ok", "data": {"id": delivery_id, "event_id": id}}),
    );
    assert_eq!(r.json()["data"]["status"], "pending", "{}", r.text());
    let q = receiver.wait_for_id(&id, 10);
    check_event(&q, &h.secret, &h.key_id);
    assert_eq!(n_of(&q.json()), Some(1));
    wait_delivery(&s, &admin, &h.key_id, &id, |d| d["status"] == "delivered");

    // A delivered event may be sent again too, still under its id.
    let copies = |r: &[Received]| r.iter().filter(|q| q.id() == id && q.delivered()).count();
    s.check("POST", &retry, &admin, None, 200, json!({"data": {"event_id": id}}));
    receiver.wait_until(10, "a second delivered copy", |r| copies(r) == 2);

    let unknown = format!("/api/v1/api-keys/{}/webhook/deliveries/999999/retry", h.key_id);
    s.check_error("POST", &unknown, &admin, None, 404, "Delivery not found");
    // Another key's delivery id is not found under this key.
    let other = hooked(&s, &admin, &receiver.url());
    let theirs = format!("/api/v1/api-keys/{}/webhook/deliveries/{delivery_id}/retry", other.key_id);
    s.check_error("POST", &theirs, &admin, None, 404, "Delivery not found");
}
