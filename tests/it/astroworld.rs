//! Astroworld-shaped chat (decisions 14 and 15, issue 9): the four examples of the seed page
//! `astroworld-chat-api.txt` (curl, Python `requests`, JavaScript `fetch`, PHP) run as
//! written with only the host, the key and the bot id changed; bot-bound keys made over
//! HTTP and with the CLI, changed with `PATCH /api/v1/api-keys/{key_id}` and
//! `astrbot key update`; sessions owned by a key; the real status codes of the errors; the
//! 1,000-a-day quota of a bound key; and AstrBot-shaped requests left as they were.
//!
//! A bot is a config profile (here `website`: persona `guide`, knowledge collection
//! `website` with an "Opening hours" section added by `astrbot kb add`), answered by the
//! built-in provider, so every answer is known in advance. The examples' runtimes other
//! than curl are optional: a test whose runtime is missing prints why and passes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Resp, Server, TempDir, bearer, cli, eventually};

// ---------------------------------------------------------------------------------------
// The seed page's examples, copied verbatim. Only these three placeholders are replaced.

const SEED_HOST: &str = "https://chat.astroworldmc.com";
const SEED_KEY: &str = "awk_YOUR_KEY";
const SEED_BOT: &str = "YOUR_BOT_ID";

const SEED_CURL: &str = r#"curl https://chat.astroworldmc.com/api/v1/chat \
  -H "Authorization: Bearer awk_YOUR_KEY" \
  -H "Content-Type: application/json" \
  -d '{"bot_id":"YOUR_BOT_ID","message":"What are your opening hours?"}'"#;

const SEED_PYTHON: &str = r#"import requests

r = requests.post(
    "https://chat.astroworldmc.com/api/v1/chat",
    headers={"Authorization": "Bearer awk_YOUR_KEY"},
    json={"bot_id": "YOUR_BOT_ID", "message": "What are your opening hours?"},
)
data = r.json()
print(data["response"])
# pass data["session_id"] back on the next call to continue the conversation
"#;

const SEED_JAVASCRIPT: &str = r#"const res = await fetch("https://chat.astroworldmc.com/api/v1/chat", {
  method: "POST",
  headers: {
    "Authorization": "Bearer awk_YOUR_KEY",
    "Content-Type": "application/json",
  },
  body: JSON.stringify({ bot_id: "YOUR_BOT_ID", message: "What are your opening hours?" }),
});
const data = await res.json();
console.log(data.response);
"#;

const SEED_PHP: &str = r#"<?php
$ch = curl_init("https://chat.astroworldmc.com/api/v1/chat");
curl_setopt_array($ch, [
  CURLOPT_RETURNTRANSFER => true,
  CURLOPT_POST => true,
  CURLOPT_HTTPHEADER => [
    "Authorization: Bearer awk_YOUR_KEY",
    "Content-Type: application/json",
  ],
  CURLOPT_POSTFIELDS => json_encode([
    "bot_id" => "YOUR_BOT_ID",
    "message" => "What are your opening hours?",
  ]),
]);
$data = json_decode(curl_exec($ch), true);
echo $data["response"];
"#;

/// The question every seed example asks.
pub const QUESTION: &str = "What are your opening hours?";

/// The knowledge the `website` bot answers from: the answer of the seed page's own sample.
pub const HOURS_MD: &str = "# Astroworld\n\n## Opening hours\n\nWe are open Monday to Friday, 9 to 5.\n";
pub const HOURS: &str = "We are open Monday to Friday, 9 to 5.";

/// A seed example with the host, the key and the bot id of this test; every placeholder
/// must be there, so the example ran is the one on the page.
fn adapt(seed: &str, s: &Server, key: &str, bot: &str) -> String {
    for placeholder in [SEED_HOST, SEED_KEY, SEED_BOT] {
        assert!(seed.contains(placeholder), "the seed example lost {placeholder}");
    }
    seed.replace(SEED_HOST, &format!("http://{}", s.addr)).replace(SEED_KEY, key).replace(SEED_BOT, bot)
}

// ---------------------------------------------------------------------------------------
// Bots, keys and requests

/// Creates the `website` bot: persona `guide`, collection `website` (from [`HOURS_MD`],
/// with `astrbot kb add`) and a config profile naming both. Returns the profile's id.
pub fn website_bot(s: &Server, admin: &str) -> String {
    let dir = s.data.path().join("website-kb");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hours.md"), HOURS_MD).unwrap();
    let (code, out, err) =
        cli(s.data.path(), &["kb", "add", "--collection", "website", dir.to_str().unwrap()], None);
    assert_eq!(code, 0, "kb add: {out}{err}");
    let persona =
        json!({"persona_id": "guide", "system_prompt": "You answer visitors of the Astroworld website."});
    s.expect(&s.call("POST", "/api/v1/personas", admin, Some(persona)), 200);
    profile(s, admin, "website", "guide")
}

/// Creates a config profile `name` whose default persona is `persona`; returns its id.
pub fn profile(s: &Server, admin: &str, name: &str, persona: &str) -> String {
    let body = json!({"name": name, "config": {
        "provider_settings": {"default_personality": persona},
        "kb_names": ["website"],
    }});
    let r = s.call("POST", "/api/v1/config-profiles", admin, Some(body));
    s.expect(&r, 200);
    r.json()["data"]["conf_id"].as_str().unwrap().to_owned()
}

/// Creates a key over HTTP with `body`; returns (raw key, key_id, the whole `data`).
pub fn create(s: &Server, admin: &str, body: Value) -> (String, String, Value) {
    let r = s.call("POST", "/api/v1/api-keys", admin, Some(body));
    s.expect(&r, 200);
    let d = r.json()["data"].clone();
    (d["api_key"].as_str().unwrap().to_owned(), d["key_id"].as_str().unwrap().to_owned(), d)
}

/// `POST /api/v1/chat` with `key`, `body` and optionally an `Accept` header, as a website's
/// backend sends it.
pub fn chat(s: &Server, key: &str, body: &Value, accept: Option<&str>) -> Resp {
    let auth = bearer(key);
    let mut headers = vec![("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    if let Some(a) = accept {
        headers.push(("Accept", a));
    }
    s.request("POST", "/api/v1/chat", &headers, Some(&body.to_string()))
}

/// An Astroworld chat that must succeed: the bare JSON answer.
#[track_caller]
pub fn ask(s: &Server, key: &str, body: Value) -> Value {
    let r = chat(s, key, &body, None);
    s.expect(&r, 200);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{:?}", r.headers);
    let v = r.json();
    assert!(v.get("status").is_none(), "an Astroworld answer has no envelope: {v}");
    assert!(v["session_id"].as_str().is_some_and(|sid| sid.starts_with("api-")), "{v}");
    v
}

/// The session's messages as the admin reads them (`username` is the owner).
fn messages(s: &Server, admin: &str, session: &str, username: &str) -> Vec<Value> {
    let r = s.call("GET", &format!("/api/v1/chat/sessions/{session}?username={username}"), admin, None);
    s.expect(&r, 200);
    r.json()["data"]["messages"].as_array().cloned().unwrap_or_else(|| panic!("no messages: {}", r.text()))
}

fn texts(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["content"]["message"][0]["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The key object of `key_id` in the admin's listing.
pub fn listed(s: &Server, admin: &str, key_id: &str) -> Value {
    let r = s.call("GET", "/api/v1/api-keys", admin, None);
    s.expect(&r, 200);
    let list = r.json()["data"].as_array().cloned().unwrap();
    list.into_iter().find(|k| k["key_id"] == key_id).unwrap_or_else(|| panic!("{key_id} is not listed"))
}

/// Whether an error envelope with a non-empty message and exactly this status came back.
#[track_caller]
fn assert_refused(s: &Server, r: &Resp, status: u16, what: &str) {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let ok = r.status == status
        && v["status"] == "error"
        && v["message"].as_str().is_some_and(|m| !m.is_empty())
        && v.as_object().is_some_and(|o| o.keys().all(|k| k == "status" || k == "message"));
    assert!(
        ok,
        "{what}: expected {status} and an error envelope, got {} {}\n--- server log ---\n{}",
        r.status,
        r.text(),
        s.log()
    );
}

// ---------------------------------------------------------------------------------------
// Running the examples

/// Runs `program` with `args` in `dir`, with proxies cleared so loopback is reached
/// directly; at most 60 seconds. Returns (exit code, stdout, stderr).
fn run(program: &str, args: &[&str], dir: &Path) -> (i32, String, String) {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(dir);
    for var in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"] {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost").env("no_proxy", "127.0.0.1,localhost");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{program} {args:?} ran for more than 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether `program args` exits 0 (false when it cannot be started).
fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A folder for the example's file, removed afterwards.
fn scratch() -> TempDir {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path()).unwrap();
    dir
}

/// What an example must print: the built-in provider's answer from the `website`
/// collection, the same as an AstrBot-shaped JSON chat as the same bot gets.
fn expected_answer(s: &Server, key: &str, bot: &str) -> String {
    let body = json!({"username": "reference", "message": QUESTION, "config_id": bot});
    let r = chat(s, key, &body, Some("application/json"));
    s.expect(&r, 200);
    let answer = r.json()["data"]["response"].as_str().unwrap().to_owned();
    assert_eq!(answer, HOURS, "the built-in provider answers from the bot's collection");
    answer
}

/// A server with the `website` bot and a key bound to it: (server, admin, bot, key, key_id).
fn website() -> (Server, String, String, String, String) {
    let s = Server::start();
    let admin = s.admin_token();
    let bot = website_bot(&s, &admin);
    let (key, key_id, _) = create(&s, &admin, json!({"name": "website", "bot_id": bot}));
    (s, admin, bot, key, key_id)
}

/// Splits an example's output `"<answer>\n<session_id>\n"` (the answer may span lines).
fn answer_and_session(out: &str) -> (String, String) {
    let (answer, sid) =
        out.trim_end_matches('\n').rsplit_once('\n').unwrap_or_else(|| panic!("output {out:?}"));
    (answer.to_owned(), sid.to_owned())
}

#[test]
fn the_seed_curl_example_works_verbatim() {
    let (s, _admin, bot, key, _) = website();
    let expected = expected_answer(&s, &key, &bot);
    let dir = scratch();
    let (code, out, err) = run("sh", &["-c", &adapt(SEED_CURL, &s, &key, &bot)], dir.path());
    assert_eq!(code, 0, "curl failed: {err}");
    println!("curl printed: {out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("curl printed no JSON ({e}): {out}"));
    assert_eq!(v["response"], expected.as_str(), "{v}");
    assert!(v["session_id"].as_str().unwrap().starts_with("api-"), "{v}");
    let sources = v["sources"].as_array().unwrap_or_else(|| panic!("no sources: {v}"));
    assert_eq!(
        sources[0],
        json!({"title": "Astroworld › Opening hours", "url": "kb:website/hours.md#opening-hours"}),
        "{v}"
    );
    let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["response", "session_id", "sources"], "the seed page's shape: {v}");
}

#[test]
fn the_seed_python_example_works_verbatim_and_its_session_continues() {
    if !works("python3", &["-c", "import requests"]) {
        println!(
            "skipped: python3 with the requests package is not installed (apt-get install python3-requests)"
        );
        return;
    }
    let (s, admin, bot, key, key_id) = website();
    let expected = expected_answer(&s, &key, &bot);
    let dir = scratch();
    // The example as pasted, then one line to show the session id it is told to pass back.
    let script = adapt(SEED_PYTHON, &s, &key, &bot) + "print(data[\"session_id\"])\n";
    std::fs::write(dir.path().join("example.py"), script).unwrap();
    let (code, out, err) = run("python3", &["example.py"], dir.path());
    assert_eq!(code, 0, "python failed: {err}");
    println!("python printed: {out}");
    let (answer, sid) = answer_and_session(&out);
    assert_eq!(answer, expected);
    assert!(sid.starts_with("api-"), "{sid}");

    // Sending the session id back continues the same conversation.
    let next = ask(&s, &key, json!({"bot_id": bot, "message": "And on public holidays?", "session_id": sid}));
    assert_eq!(next["session_id"], sid.as_str());
    let history = messages(&s, &admin, &sid, &format!("key:{key_id}"));
    assert_eq!(
        texts(&history),
        [QUESTION, HOURS, "And on public holidays?", next["response"].as_str().unwrap()]
    );
}

#[test]
fn the_seed_javascript_example_works_verbatim() {
    let major = Command::new("node").arg("--version").output().ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .trim_start_matches('v')
            .split('.')
            .next()?
            .parse::<u32>()
            .ok()
    });
    match major {
        None => {
            println!("skipped: node is not installed (the example needs Node 18 or later for fetch)");
            return;
        }
        Some(m) if m < 18 => {
            println!("skipped: node {m} has no global fetch (the example needs Node 18 or later)");
            return;
        }
        Some(_) => {}
    }
    let (s, _admin, bot, key, _) = website();
    let expected = expected_answer(&s, &key, &bot);
    let dir = scratch();
    let script = adapt(SEED_JAVASCRIPT, &s, &key, &bot) + "console.log(data.session_id);\n";
    std::fs::write(dir.path().join("example.mjs"), script).unwrap();
    let (code, out, err) = run("node", &["example.mjs"], dir.path());
    assert_eq!(code, 0, "node failed: {err}");
    println!("node printed: {out}");
    let (answer, sid) = answer_and_session(&out);
    assert_eq!(answer, expected);
    assert!(sid.starts_with("api-"), "{sid}");
}

#[test]
fn the_seed_php_example_works_verbatim() {
    if !works("php", &["-r", "exit(function_exists('curl_init') ? 0 : 1);"]) {
        println!("skipped: php with the curl extension is not installed (apt-get install php-cli php-curl)");
        return;
    }
    let (s, _admin, bot, key, _) = website();
    let expected = expected_answer(&s, &key, &bot);
    let dir = scratch();
    let script = adapt(SEED_PHP, &s, &key, &bot) + "echo \"\\n\", $data[\"session_id\"], \"\\n\";\n";
    std::fs::write(dir.path().join("example.php"), script).unwrap();
    let (code, out, err) = run("php", &["example.php"], dir.path());
    assert_eq!(code, 0, "php failed: {out}{err}");
    println!("php printed: {out}");
    let (answer, sid) = answer_and_session(&out);
    assert_eq!(answer, expected);
    assert!(sid.starts_with("api-"), "{sid}");
}

// ---------------------------------------------------------------------------------------
// Sessions

#[test]
fn sending_the_session_id_back_continues_the_conversation() {
    let (s, admin, bot, key, key_id) = website();
    let first = ask(&s, &key, json!({"bot_id": bot, "message": QUESTION}));
    assert_eq!(first["response"], HOURS);
    let sid = first["session_id"].as_str().unwrap().to_owned();
    let uuid = &sid["api-".len()..];
    assert!(uuid.len() == 36 && uuid.chars().filter(|c| *c == '-').count() == 4, "api-<uuid>: {sid}");
    let second = ask(&s, &key, json!({"bot_id": bot, "message": "Where is the parking?", "session_id": sid}));
    assert_eq!(second["session_id"], sid.as_str());

    let history = messages(&s, &admin, &sid, &format!("key:{key_id}"));
    assert_eq!(history.len(), 4, "{history:?}");
    let senders: Vec<&str> = history.iter().map(|m| m["sender"].as_str().unwrap()).collect();
    assert_eq!(senders, ["user", "bot", "user", "bot"]);
    assert_eq!(texts(&history)[..3], [QUESTION, HOURS, "Where is the parking?"]);

    // A new request without session_id starts a new session.
    let other = ask(&s, &key, json!({"bot_id": bot, "message": QUESTION}));
    assert_ne!(other["session_id"], sid.as_str());
}

#[test]
fn another_key_can_neither_continue_nor_read_a_keys_session() {
    let (s, admin, bot, key, key_id) = website();
    let (other, _, _) = create(&s, &admin, json!({"name": "other", "bot_id": bot}));
    let sid =
        ask(&s, &key, json!({"bot_id": bot, "message": QUESTION}))["session_id"].as_str().unwrap().to_owned();
    let owner = format!("key:{key_id}");
    assert_eq!(messages(&s, &admin, &sid, &owner).len(), 2);

    let r = chat(&s, &other, &json!({"bot_id": bot, "message": "Let me in", "session_id": sid}), None);
    assert_refused(&s, &r, 403, "another key continuing the session");

    // Nor through AstrBot's shape, naming the owner's identity as its username.
    chat(
        &s,
        &other,
        &json!({"username": owner, "message": "Let me in", "session_id": sid}),
        Some("application/json"),
    );
    let r = s.call("GET", &format!("/api/v1/chat/sessions/{sid}?username={owner}"), &other, None);
    assert!(!r.text().contains(HOURS), "another key read the session: {}", r.text());
    let r = s.call("GET", &format!("/api/v1/chat/sessions?username={owner}"), &other, None);
    assert!(!r.text().contains(&sid), "another key listed the session: {}", r.text());

    assert_eq!(texts(&messages(&s, &admin, &sid, &owner)), [QUESTION, HOURS], "the session is untouched");
}

// ---------------------------------------------------------------------------------------
// Bot-bound keys and errors

#[test]
fn a_bound_key_chats_only_as_its_bot() {
    let (s, admin, bot, key, _) = website();
    let other_bot = profile(&s, &admin, "shop", "default");
    s.check_error(
        "POST",
        "/api/v1/chat",
        &key,
        Some(json!({"bot_id": other_bot, "message": QUESTION})),
        403,
        &format!("API key is bound to bot {bot}"),
    );
    // Its own bot, by id or by the profile's name.
    ask(&s, &key, json!({"bot_id": bot, "message": QUESTION}));
    ask(&s, &key, json!({"bot_id": "website", "message": QUESTION}));

    // Without bot_id, an AstrBot-shaped request of a bound key speaks as its bot: the
    // bot's persona answers /persona, where an unbound key gets the default persona.
    let persona = json!({"username": "alice", "message": "/persona"});
    let r = chat(&s, &key, &persona, Some("application/json"));
    s.expect(&r, 200);
    let reply = r.json()["data"]["response"].as_str().unwrap_or_default().to_owned();
    assert!(reply.starts_with("Current persona: guide"), "{}", r.text());
    let (unbound, _, _) = create(&s, &admin, json!({"name": "unbound", "scopes": ["chat"]}));
    let r = chat(&s, &unbound, &persona, Some("application/json"));
    assert!(
        r.json()["data"]["response"].as_str().unwrap_or_default().starts_with("Current persona: default"),
        "{}",
        r.text()
    );
    // An unbound key may name any bot.
    ask(&s, &unbound, json!({"bot_id": other_bot, "message": QUESTION}));
}

#[test]
fn astroworld_errors_have_real_status_codes() {
    let (s, admin, bot, key, _) = website();
    let (unbound, _, _) = create(&s, &admin, json!({"name": "unbound", "scopes": ["chat"]}));
    s.check_error(
        "POST",
        "/api/v1/chat",
        &unbound,
        Some(json!({"bot_id": "nope", "message": QUESTION})),
        404,
        "Bot not found: nope",
    );
    // A bot id of half a megabyte names nothing and is not echoed back.
    let r = s.call(
        "POST",
        "/api/v1/chat",
        &unbound,
        Some(json!({"bot_id": "b".repeat(500_000), "message": QUESTION})),
    );
    s.expect_error(&r, 400, "bot_id must be at most 255 characters");
    s.check_error(
        "POST",
        "/api/v1/chat",
        "abk_not-a-key",
        Some(json!({"bot_id": bot, "message": QUESTION})),
        401,
        "Invalid API key",
    );
    s.check_error(
        "POST",
        "/api/v1/chat",
        "",
        Some(json!({"bot_id": bot, "message": QUESTION})),
        401,
        "Missing API key",
    );
    for (body, what) in [
        (json!({"bot_id": bot}), "no message"),
        (json!({"bot_id": bot, "message": ""}), "an empty message"),
        (json!({"bot_id": bot, "message": 5}), "a number as message"),
        (json!({"bot_id": 5, "message": QUESTION}), "a number as bot_id"),
        (json!({"bot_id": bot, "message": QUESTION, "session_id": 7}), "a number as session_id"),
    ] {
        assert_refused(&s, &chat(&s, &key, &body, None), 400, what);
    }
    let auth = bearer(&key);
    let r = s.request(
        "POST",
        "/api/v1/chat",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        Some("{\"bot_id\": "),
    );
    assert_refused(&s, &r, 400, "a body that is not JSON");
    // A revoked key is 401 as well.
    let (revoked, revoked_id, _) = create(&s, &admin, json!({"name": "gone", "bot_id": bot}));
    s.expect(&s.call("POST", &format!("/api/v1/api-keys/{revoked_id}/revoke"), &admin, None), 200);
    s.check_error(
        "POST",
        "/api/v1/chat",
        &revoked,
        Some(json!({"bot_id": bot, "message": QUESTION})),
        401,
        "Invalid API key",
    );
}

#[test]
fn a_bound_keys_1001st_request_of_the_day_gets_429() {
    let (s, admin, bot, key, key_id) = website();
    assert_eq!(listed(&s, &admin, &key_id)["daily_limit"], 1000, "a bound key's default quota");
    // The quota counts every request made with the key, so cheap ones can fill it.
    for i in 0..999 {
        let r = s.call("GET", "/api/v1/chat/sessions?username=visitor", &key, None);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        if i == 0 {
            assert_eq!(r.header("RateLimit-Policy"), Some(r#""daily";q=1000;w=86400"#));
        }
    }
    let r = chat(&s, &key, &json!({"bot_id": bot, "message": QUESTION}), None);
    s.expect(&r, 200);
    assert!(
        r.header("RateLimit").is_some_and(|h| h.starts_with(r#""daily";r=0;"#)),
        "{:?}",
        r.header("RateLimit")
    );
    let r = chat(&s, &key, &json!({"bot_id": bot, "message": QUESTION}), None);
    s.expect_error(&r, 429, "Daily request limit exceeded");
    let retry: i64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry));
    assert!(
        eventually(5, || listed(&s, &admin, &key_id)["usage_today"] == 1000),
        "{}",
        listed(&s, &admin, &key_id)
    );
}

#[test]
fn accept_event_stream_gets_the_sse_stream() {
    let (s, _admin, bot, key, _) = website();
    let r = chat(&s, &key, &json!({"bot_id": bot, "message": QUESTION}), Some("text/event-stream"));
    s.expect(&r, 200);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/event-stream")), "{:?}", r.headers);
    let events: Vec<Value> = r
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "session_id");
    assert!(events[0]["session_id"].as_str().unwrap().starts_with("api-"), "{:?}", events[0]);
    let complete = events.iter().find(|e| e["type"] == "complete").unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(complete["data"], HOURS);
    assert_eq!(events.last().unwrap()["type"], "end");
    // Any other Accept, `*/*` as curl and requests send it, gets the bare JSON.
    let r = chat(&s, &key, &json!({"bot_id": bot, "message": QUESTION}), Some("*/*"));
    assert_eq!(r.json()["response"], HOURS, "{}", r.text());
}

#[test]
fn astrbot_shaped_requests_are_unchanged() {
    let (s, admin, _bot, bound, _) = website();
    let (plain, _, _) = create(&s, &admin, json!({"name": "astrbot client", "scopes": ["chat"]}));
    for key in [&plain, &bound] {
        s.check_error(
            "POST",
            "/api/v1/chat",
            key,
            Some(json!({"message": QUESTION})),
            200,
            "Missing key: username",
        );
        let r = chat(&s, key, &json!({"username": "alice", "message": QUESTION}), None);
        s.expect(&r, 200);
        assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/event-stream")), "{}", r.text());
        let first = r.text().lines().next().unwrap_or_default().to_owned();
        let event: Value = serde_json::from_str(first.strip_prefix("data: ").unwrap()).unwrap();
        let sid = event["session_id"].as_str().unwrap();
        assert!(!sid.starts_with("api-") && sid.len() == 36, "AstrBot's session ids stay UUIDs: {sid}");
        let r = chat(&s, key, &json!({"username": "alice", "message": QUESTION}), Some("application/json"));
        let v = r.json();
        assert_eq!((v["status"].clone(), v["data"]["response"].clone()), (json!("ok"), json!(HOURS)), "{v}");
    }
}

// ---------------------------------------------------------------------------------------
// Key administration: bot_id, webhook_url, usage_today, PATCH and the CLI

#[test]
fn a_bound_key_is_listed_with_its_bot_webhook_and_usage() {
    let (s, admin, bot, key, key_id) = website();
    let k = listed(&s, &admin, &key_id);
    assert_eq!(
        (k["bot_id"].clone(), k["webhook_url"].clone(), k["usage_today"].clone(), k["daily_limit"].clone()),
        (json!(bot), Value::Null, json!(0), json!(1000)),
        "{k}"
    );
    assert!(k.get("webhook_secret").is_none() && k.get("api_key").is_none(), "{k}");
    for _ in 0..3 {
        ask(&s, &key, json!({"bot_id": bot, "message": QUESTION}));
    }
    assert!(
        eventually(5, || listed(&s, &admin, &key_id)["usage_today"] == 3),
        "{}",
        listed(&s, &admin, &key_id)
    );
}

#[test]
fn patch_changes_a_key_and_only_the_admin_may() {
    let (s, admin, bot, key, key_id) = website();
    let other_bot = profile(&s, &admin, "shop", "default");
    let path = format!("/api/v1/api-keys/{key_id}");

    let r = s.check(
        "PATCH",
        &path,
        &admin,
        Some(json!({"name": "renamed", "daily_limit": 50})),
        200,
        json!({"status": "ok"}),
    );
    let d = r.json()["data"].clone();
    assert_eq!(
        (d["key_id"].clone(), d["name"].clone(), d["daily_limit"].clone()),
        (json!(key_id), json!("renamed"), json!(50))
    );
    assert!(d.get("api_key").is_none() && d.get("webhook_secret").is_none(), "{d}");

    // Rebound: the key now chats as the other bot only.
    s.check(
        "PATCH",
        &path,
        &admin,
        Some(json!({"bot_id": other_bot})),
        200,
        json!({"data": {"bot_id": other_bot}}),
    );
    s.check_error(
        "POST",
        "/api/v1/chat",
        &key,
        Some(json!({"bot_id": bot, "message": QUESTION})),
        403,
        &format!("API key is bound to bot {other_bot}"),
    );
    ask(&s, &key, json!({"bot_id": other_bot, "message": QUESTION}));

    // The first webhook_url makes the first secret, shown in this answer only.
    let r = s.check(
        "PATCH",
        &path,
        &admin,
        Some(json!({"webhook_url": "https://example.com/hook"})),
        200,
        json!({"data": {"webhook_url": "https://example.com/hook"}}),
    );
    let secret = r.json()["data"]["webhook_secret"].as_str().unwrap_or_default().to_owned();
    assert!(secret.starts_with("whsec_"), "{}", r.text());
    let r = s.check(
        "PATCH",
        &path,
        &admin,
        Some(json!({"webhook_url": "http://127.0.0.1:9/other"})),
        200,
        json!({"data": {"webhook_url": "http://127.0.0.1:9/other"}}),
    );
    assert!(r.json()["data"].get("webhook_secret").is_none(), "a changed URL keeps the secret: {}", r.text());

    // null removes the bot and the webhook.
    s.check(
        "PATCH",
        &path,
        &admin,
        Some(json!({"bot_id": null, "webhook_url": null, "expires_in_days": 30})),
        200,
        json!({"data": {"bot_id": null, "webhook_url": null}}),
    );
    let k = listed(&s, &admin, &key_id);
    assert_eq!(
        (k["name"].clone(), k["daily_limit"].clone(), k["bot_id"].clone(), k["webhook_url"].clone()),
        (json!("renamed"), json!(50), Value::Null, Value::Null),
        "{k}"
    );
    assert!(k["expires_at"].is_string(), "{k}");
    assert!(
        !s.call("GET", "/api/v1/api-keys", &admin, None).text().contains(&secret),
        "a listing never shows the secret"
    );
    ask(&s, &key, json!({"bot_id": bot, "message": QUESTION}));

    // Only the admin: a key, even with every scope, is refused.
    let (all_scopes, _, _) = create(&s, &admin, json!({"name": "all"}));
    for k in [&key, &all_scopes] {
        s.check_error(
            "PATCH",
            &path,
            k,
            Some(json!({"name": "mine now"})),
            403,
            "Insufficient API key scope",
        );
    }
    assert_eq!(listed(&s, &admin, &key_id)["name"], "renamed");
    let r = s.call("PATCH", "/api/v1/api-keys/no-such-key", &admin, Some(json!({"name": "x"})));
    assert!(
        matches!(r.status, 400 | 404) && r.json()["message"] == "API key not found",
        "{} {}",
        r.status,
        r.text()
    );
}

#[test]
fn hostile_key_input_is_refused_and_changes_nothing() {
    let (s, admin, _bot, _key, key_id) = website();
    let long_url = format!("https://example.com/{}", "a".repeat(10 * 1024));
    let bodies: Vec<(String, &str)> = vec![
        (r#"{"daily_limit": 18446744073709551616}"#.into(), "daily_limit 2^64"),
        (r#"{"daily_limit": -1}"#.into(), "a negative daily_limit"),
        (r#"{"daily_limit": "lots"}"#.into(), "a string daily_limit"),
        (r#"{"expires_in_days": 1000000000000}"#.into(), "expires_in_days 10^12"),
        (r#"{"webhook_url": "ftp://x"}"#.into(), "an ftp webhook"),
        (r#"{"webhook_url": "javascript:alert(1)"}"#.into(), "a javascript: webhook"),
        (r#"{"webhook_url": "not a url"}"#.into(), "a webhook that is no URL"),
        (json!({"webhook_url": long_url}).to_string(), "a 10 KB webhook URL"),
        (r#"{"webhook_url": 5}"#.into(), "a number as webhook_url"),
        (r#"{"bot_id": "no-such-bot"}"#.into(), "the bot of a missing profile"),
        (r#"{"bot_id": 5}"#.into(), "a number as bot_id"),
    ];
    let auth = bearer(&admin);
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let list_before = s.call("GET", "/api/v1/api-keys", &admin, None).json()["data"].clone();
    let key_before = listed(&s, &admin, &key_id);
    for (body, what) in &bodies {
        let r = s.request("POST", "/api/v1/api-keys", &headers, Some(body));
        assert_refused(&s, &r, 400, &format!("create with {what}"));
        let r = s.request("PATCH", &format!("/api/v1/api-keys/{key_id}"), &headers, Some(body));
        assert_refused(&s, &r, 400, &format!("PATCH with {what}"));
    }
    assert_eq!(
        s.call("GET", "/api/v1/api-keys", &admin, None).json()["data"],
        list_before,
        "no key was created"
    );
    assert_eq!(listed(&s, &admin, &key_id), key_before, "the key is unchanged");
}

#[test]
fn the_cli_creates_and_updates_bound_keys() {
    let (s, admin, bot, _, _) = website();
    let data = s.data.path().to_owned();
    let (code, out, err) = cli(&data, &["key", "create", "--name", "cli-website", "--bot", &bot], None);
    assert_eq!(code, 0, "{err}");
    let key = out.trim().to_owned();
    assert!(key.starts_with("abk_") && key.len() == 47, "{out}");
    assert_eq!(ask(&s, &key, json!({"bot_id": bot, "message": QUESTION}))["response"], HOURS);

    let (_, out, _) = cli(&data, &["key", "list", "--json"], None);
    let list: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let k = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "cli-website" && k["bot_id"] == bot.as_str())
        .cloned();
    let k = k.unwrap_or_else(|| panic!("the CLI key is not listed with its bot: {out}"));
    assert_eq!(
        (k["scopes"].clone(), k["daily_limit"].clone()),
        (json!(["chat", "file"]), json!(1000)),
        "{k}"
    );
    let id = k["key_id"].as_str().unwrap().to_owned();

    let update = |args: &[&str]| -> Value {
        let mut all = vec!["key", "update", id.as_str()];
        all.extend_from_slice(args);
        all.push("--json");
        let (code, out, err) = cli(&data, &all, None);
        assert_eq!(code, 0, "{args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
    };
    let k = update(&["--name", "renamed", "--daily-limit", "500"]);
    assert_eq!((k["name"].clone(), k["daily_limit"].clone()), (json!("renamed"), json!(500)), "{k}");
    let k = update(&["--webhook-url", "https://example.com/hook"]);
    assert_eq!(k["webhook_url"], "https://example.com/hook");
    assert!(
        k["webhook_secret"].as_str().is_some_and(|w| w.starts_with("whsec_")),
        "the first secret is shown once: {k}"
    );
    // The running server sees each change within a second (its key cache is dropped).
    let other = profile(&s, &admin, "shop", "default");
    let as_other = || chat(&s, &key, &json!({"bot_id": other, "message": QUESTION}), None).status;
    assert_eq!(as_other(), 403);
    let k = update(&["--bot", "none", "--webhook-url", "none", "--expires-in-days", "never"]);
    assert_eq!(
        (k["bot_id"].clone(), k["webhook_url"].clone(), k["expires_at"].clone()),
        (Value::Null, Value::Null, Value::Null),
        "{k}"
    );
    assert!(eventually(2, || as_other() == 200), "the server did not see the key unbound");
    let k = update(&["--bot", &bot, "--daily-limit", "default"]);
    assert_eq!(k["bot_id"], bot.as_str());
    assert!(eventually(2, || as_other() == 403), "the server did not see the key bound again");

    // With a webhook at create, the secret is printed once.
    let (code, out, err) = cli(
        &data,
        &[
            "key",
            "create",
            "--name",
            "hooked",
            "--bot",
            &bot,
            "--webhook-url",
            "https://example.com/h",
            "--json",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert!(created["webhook_secret"].as_str().is_some_and(|w| w.starts_with("whsec_")), "{created}");
    assert!(created["api_key"].as_str().is_some_and(|k| k.starts_with("abk_")), "{created}");

    for (args, what) in [
        (vec!["key", "update", "no-such-key", "--name", "x"], "an unknown key"),
        (vec!["key", "create", "--name", "x", "--bot", "no-such-bot"], "a missing bot"),
        (vec!["key", "update", id.as_str(), "--webhook-url", "ftp://x"], "an ftp webhook"),
        (vec!["key", "update", id.as_str(), "--daily-limit", "-1"], "a negative limit"),
    ] {
        let (code, _, err) = cli(&data, &args, None);
        assert!(code != 0 && !err.trim().is_empty(), "{what}: exit {code}, stderr {err:?}");
    }
}

#[test]
fn the_website_chatbots_guide_is_served() {
    let s = Server::start();
    let r = s.get("/docs/website-chatbots", &[]);
    s.expect(&r, 200);
    let html = r.text();
    assert!(html.contains("<h1>") && html.contains("Website chatbots"), "{html}");
    for needle in ["standardwebhooks", "webhook-signature", "bot_id", "kb add"] {
        assert!(html.contains(needle), "the guide does not mention {needle}");
    }
}
