//! The runtime against real plugin programs written to a temporary folder: a Python
//! long-lived plugin and `sh` one-shot plugins, well-behaved and not (hanging, crashing,
//! flooding stdout). Each test waits for what it checks with a deadline, never a fixed sleep.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::plugins::manifest::{Exec, Mode};
use child::testing::{running, wait_for};

/// A long-lived plugin in Python: commands by handler, one tool, a few ways to misbehave.
const PYTHON: &str = r#"#!/usr/bin/env python3
import json, os, subprocess, sys, threading, time
out = threading.Lock()
init = None
cancelled = []
def send(msg):
    with out:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()
def answer(id, result):
    send({"jsonrpc": "2.0", "id": id, "result": result})
def later(id, secs, result):
    time.sleep(secs)
    answer(id, result)
for line in sys.stdin:
    msg = json.loads(line)
    method, id, p = msg.get("method"), msg.get("id"), msg.get("params") or {}
    if method == "initialize":
        init = p
        answer(id, {"protocol_version": 1})
        continue
    if method == "notifications/cancelled":
        cancelled.append(p)
        continue
    if method == "shutdown":
        with open("shutdown.txt", "w") as f:
            f.write("bye")
        sys.exit(0)
    if id is None:
        continue
    if method == "tools/call":
        text = "%s %s" % (p["name"], json.dumps(p["arguments"], sort_keys=True))
        answer(id, {"content": [{"type": "text", "text": text}], "isError": False})
        continue
    h, args = p.get("handler"), p.get("args") or {}
    if h == "echo":
        answer(id, {"text": "echo " + args.get("text", "") + " from " + p["event"]["sender"]["name"]})
    elif h == "sleep":
        threading.Thread(target=later, args=(id, args["s"], args["s"])).start()
    elif h == "config":
        answer(id, init["config"])
    elif h == "pid":
        answer(id, os.getpid())
    elif h == "spawn":
        child = subprocess.Popen(["sleep", "600"])
        answer(id, child.pid)
    elif h == "cancelled":
        answer(id, cancelled)
    elif h == "fail":
        send({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": "no such dice"}})
    elif h == "crash":
        sys.stderr.write("about to crash\n")
        sys.stderr.flush()
        os._exit(3)
    elif h == "garbage":
        with out:
            for i in range(20000):
                sys.stdout.write("garbage line %d {not json\n" % i)
            sys.stdout.write("[1, 2, 3]\n")
            sys.stdout.flush()
        answer(id, "after the garbage")
    elif h == "huge":
        with out:
            sys.stdout.write("x" * (17 * 1024 * 1024) + "\n")
            sys.stdout.flush()
        answer(id, "never read")
    elif h == "hang":
        pass
"#;

/// A one-shot plugin in sh: the call in the environment, the request line on stdin.
const SH: &str = r#"#!/bin/sh
read -r line
case "$ASTRBOT_CALL:$ASTRBOT_CALL_NAME" in
command:echo) echo "you said $ASTRBOT_ARG_TEXT ($ASTRBOT_ARG_TIMES times)";;
command:request) printf '%s\n' "$line";;
command:json) echo 'a log line on stdout'; echo '{"jsonrpc":"2.0","id":1,"result":{"text":"from json"}}';;
command:remote) echo '{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"refused"}}';;
command:fail) echo "it went wrong" >&2; exit 3;;
command:env) env;;
command:limits) cat /proc/self/limits;;
command:hang) echo $$ > hang.pid; exec sleep 60;;
command:huge) head -c 17000000 /dev/zero | tr '\0' x; echo;;
tool:roll_dice) echo "rolled a $ASTRBOT_ARG_SIDES-sided die";;
*) echo "unknown $ASTRBOT_CALL:$ASTRBOT_CALL_NAME" >&2; exit 2;;
esac
"#;

/// A plugin folder and data folder in a fresh temporary directory, removed on drop.
struct Fixture {
    root: PathBuf,
    runtime: Runtime,
}

impl Fixture {
    fn new(name: &str, program: &str, mode: Mode, memory_mb: Option<u64>) -> Fixture {
        Self::with(name, program, mode, memory_mb, 60)
    }

    fn with(name: &str, program: &str, mode: Mode, memory_mb: Option<u64>, idle_stop_s: u64) -> Fixture {
        let root = std::env::temp_dir().join(format!("astrbot-plugin-{}", uuid::Uuid::new_v4().simple()));
        let dir = root.join("plugins").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let main = dir.join("main");
        std::fs::write(&main, program).unwrap();
        std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exec = Exec {
            command: main.canonicalize().unwrap(),
            args: Vec::new(),
            mode,
            timeout_ms: 10_000,
            idle_stop_s,
            memory_mb,
        };
        let spec = Spec {
            name: name.to_owned(),
            exec,
            cwd: root.join("plugin_data").join(name),
            plugin_dir: dir.canonicalize().unwrap(),
        };
        Fixture { root, runtime: Runtime::new(spec) }
    }

    fn python(name: &str) -> Fixture {
        Self::new(name, PYTHON, Mode::LongLived, Some(1024))
    }

    fn sh(name: &str) -> Fixture {
        Self::new(name, SH, Mode::OneShot, Some(256))
    }

    fn command(&self, handler: &str, args: Value, timeout: Duration) -> Result<Value, CallError> {
        let params = json!({"command": handler, "handler": handler, "args": args, "event": event()});
        self.runtime.call("command/invoke", params, &|| init(json!({"greeting": "hi"})), timeout)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.runtime.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn event() -> Value {
    json!({"umo": "webchat:FriendMessage:s1", "session_id": "s1", "platform": "webchat",
           "message_type": "FriendMessage", "sender": {"id": "u1", "name": "alice"},
           "is_admin": false, "message_str": "/echo"})
}

fn init(config: Value) -> Value {
    json!({"protocol_version": 1, "host": {"name": "astrbot", "version": "0"},
           "plugin": {"name": "p", "version": "1", "dir": "/", "data_dir": "/"}, "config": config})
}

const LONG: Duration = Duration::from_secs(20);

/// Whether our own direct child `pid` was reaped (no such process at all, not even a zombie).
fn reaped(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap(), 0) != 0 }
}

fn pid_of(f: &Fixture) -> u32 {
    let v = f.command("pid", json!({}), LONG).unwrap();
    u32::try_from(v.as_u64().unwrap()).unwrap()
}

#[test]
fn long_lived_round_trips_commands_and_tools() {
    let f = Fixture::python("rt_round_trip");
    let v = f.command("echo", json!({"text": "hello"}), LONG).unwrap();
    assert_eq!(v, json!({"text": "echo hello from alice"}));
    let params = json!({"name": "roll_dice", "arguments": {"sides": 6}, "event": event()});
    let v = f.runtime.call("tools/call", params, &|| init(json!({})), LONG).unwrap();
    assert_eq!(v["content"][0]["text"], "roll_dice {\"sides\": 6}");
    assert_eq!(f.command("fail", json!({}), LONG), Err(CallError::Remote("no such dice".into())));
    let pid = pid_of(&f);
    let status = f.runtime.status();
    assert!(status.running && status.pid == Some(pid), "{status:?}");
    assert_eq!((status.calls, status.errors, status.restarts), (4, 1, 0));
    assert_eq!(status.last_error.as_deref(), Some("no such dice"));
    assert!(f.root.join("plugin_data/rt_round_trip").is_dir(), "the data folder is made");
    let mode = std::fs::metadata(f.root.join("plugin_data/rt_round_trip")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    f.runtime.stop();
    assert!(reaped(pid), "stop reaps the process");
    assert!(!f.runtime.status().running);
}

#[test]
fn stop_says_shutdown_and_a_plugin_that_listens_exits_at_once() {
    let f = Fixture::python("rt_shutdown");
    let pid = pid_of(&f);
    let started = Instant::now();
    f.runtime.stop();
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(reaped(pid));
    let said = std::fs::read_to_string(f.root.join("plugin_data/rt_shutdown/shutdown.txt"));
    assert_eq!(said.ok().as_deref(), Some("bye"), "the plugin got `shutdown`");
}

#[test]
fn stop_ends_a_plugin_that_ignores_stdin_and_sigterm() {
    let script = "#!/bin/sh\ntrap '' TERM\nread l\necho '{\"id\":0,\"result\":{}}'\nread l\nread l\n\
                  echo $$ > pid\necho '{\"id\":1,\"result\":\"ok\"}'\nexec sleep 600\n";
    let f = Fixture::new("rt_stubborn", script, Mode::LongLived, None);
    assert_eq!(f.command("echo", json!({}), LONG), Ok(json!("ok")));
    let pid_file = f.root.join("plugin_data/rt_stubborn/pid");
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let started = Instant::now();
    f.runtime.stop();
    let took = started.elapsed();
    // 2 s after stdin closed, 2 s after SIGTERM, then SIGKILL.
    assert!(
        took >= 2 * GRACE - Duration::from_millis(100) && took < 2 * GRACE + Duration::from_secs(1),
        "{took:?}"
    );
    assert!(reaped(pid), "the process is gone and reaped");
}

#[test]
fn several_calls_are_in_flight_at_once_and_answered_in_any_order() {
    let f = Arc::new(Fixture::python("rt_concurrent"));
    let pid = pid_of(&f);
    let started = Instant::now();
    let handles: Vec<_> = [0.8, 0.2, 0.6, 0.1, 0.4]
        .into_iter()
        .map(|s| {
            let f = Arc::clone(&f);
            thread::spawn(move || (s, f.command("sleep", json!({"s": s}), LONG)))
        })
        .collect();
    for h in handles {
        let (s, result) = h.join().unwrap();
        assert_eq!(result, Ok(json!(s)), "each caller gets its own answer");
    }
    // Serially they would take 2.1 s.
    assert!(started.elapsed() < Duration::from_millis(1600), "{:?}", started.elapsed());
    assert_eq!(pid_of(&f), pid, "one process served them all");
}

#[test]
fn more_calls_than_allowed_in_flight_are_refused_as_busy() {
    let f = Arc::new(Fixture::python("rt_busy"));
    pid_of(&f);
    let handles: Vec<_> = (0..MAX_IN_FLIGHT + 6)
        .map(|_| {
            let f = Arc::clone(&f);
            thread::spawn(move || f.command("sleep", json!({"s": 2}), LONG))
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let busy =
        results.iter().filter(|r| matches!(r, Err(CallError::Failed(e)) if e.contains("busy"))).count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(busy >= 1 && ok <= MAX_IN_FLIGHT && ok + busy == results.len(), "ok {ok}, busy {busy}");
}

#[test]
fn a_hanging_call_returns_at_its_deadline_and_the_group_is_killed() {
    let f = Fixture::python("rt_hang");
    let pid = pid_of(&f);
    let grandchild = u32::try_from(f.command("spawn", json!({}), LONG).unwrap().as_u64().unwrap()).unwrap();
    assert!(running(grandchild));
    let timeout = Duration::from_millis(700);
    let started = Instant::now();
    assert_eq!(f.command("hang", json!({}), timeout), Err(CallError::Timeout(timeout)));
    let took = started.elapsed();
    assert!(took >= timeout && took < timeout + Duration::from_millis(200), "{took:?}");
    // No answer 2 s after the cancellation: the whole group goes.
    assert!(wait_for(Duration::from_secs(5), || reaped(pid)), "the plugin was not killed");
    assert!(wait_for(Duration::from_secs(5), || !running(grandchild)), "its child was not killed");
    assert!(started.elapsed() >= timeout + GRACE - Duration::from_millis(100), "killed before the grace");
    // The next call starts a new process.
    let again = pid_of(&f);
    assert_ne!(again, pid);
    assert_eq!(f.runtime.status().restarts, 1);
}

#[test]
fn a_late_answer_within_the_grace_spares_the_process() {
    let f = Fixture::python("rt_late");
    let pid = pid_of(&f);
    let timeout = Duration::from_millis(300);
    assert_eq!(f.command("sleep", json!({"s": 0.8}), timeout), Err(CallError::Timeout(timeout)));
    let cancelled = f.command("cancelled", json!({}), LONG).unwrap();
    assert_eq!(cancelled[0]["reason"], "timeout", "{cancelled}");
    assert!(cancelled[0]["requestId"].is_u64(), "{cancelled}");
    // Past the grace the watchdog has decided: the process still runs.
    let past = Instant::now() + GRACE + Duration::from_millis(500);
    while Instant::now() < past {
        assert!(running(pid), "the process was killed although it answered");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(pid_of(&f), pid);
}

#[test]
fn a_plugin_that_crashes_mid_call_fails_it_at_once_then_backs_off() {
    let f = Fixture::python("rt_crash");
    let first = pid_of(&f);
    let started = Instant::now();
    let err = f.command("crash", json!({}), LONG).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let CallError::Failed(text) = &err else { panic!("{err:?}") };
    assert!(text.contains("closed its output") && text.contains("about to crash"), "{text}");
    assert!(reaped(first) || wait_for(Duration::from_secs(2), || !running(first)));
    // The next call starts a new process.
    assert_ne!(pid_of(&f), first);
    assert_eq!(f.runtime.status().restarts, 1);
    // Two more crashes within the minute: calls now fail fast, without starting anything.
    for _ in 0..2 {
        f.command("crash", json!({}), LONG).unwrap_err();
    }
    let started = Instant::now();
    let err = f.command("pid", json!({}), LONG).unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(50), "{:?}", started.elapsed());
    let text = err.to_string();
    assert!(text.starts_with("plugin rt_crash keeps crashing; retrying in "), "{text}");
    assert!(!f.runtime.status().running);
}

#[test]
fn stdout_garbage_is_ignored_and_a_huge_line_kills_the_process() {
    let f = Fixture::python("rt_flood");
    let pid = pid_of(&f);
    assert_eq!(f.command("garbage", json!({}), LONG), Ok(json!("after the garbage")));
    assert_eq!(pid_of(&f), pid, "garbage is no reason to restart");
    let err = f.command("huge", json!({}), LONG).unwrap_err();
    assert!(err.to_string().contains("a line over 16 MiB"), "{err}");
    assert!(wait_for(Duration::from_secs(5), || !running(pid)), "the flooding process still runs");
    assert_ne!(pid_of(&f), pid, "a new process serves the next call");
}

#[test]
fn a_bad_neighbour_never_delays_a_healthy_plugin() {
    let healthy = Fixture::python("rt_healthy");
    let bad = Arc::new(Fixture::python("rt_neighbour"));
    pid_of(&healthy);
    pid_of(&bad);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let (bad, stop) = (Arc::clone(&bad), Arc::clone(&stop));
        thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = bad.command("hang", json!({}), Duration::from_millis(200));
                let _ = bad.command("garbage", json!({}), LONG);
                let _ = bad.command("crash", json!({}), LONG);
            }
        })
    };
    let mut worst = Duration::ZERO;
    for i in 0..30 {
        let started = Instant::now();
        let v = healthy.command("echo", json!({"text": i.to_string()}), LONG).unwrap();
        assert_eq!(v["text"], format!("echo {i} from alice"));
        worst = worst.max(started.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    worker.join().unwrap();
    assert!(worst < Duration::from_millis(500), "a healthy call took {worst:?}");
}

#[test]
fn a_new_config_is_seen_after_stop() {
    let f = Fixture::python("rt_config");
    let config = Arc::new(Mutex::new(json!({"sides": 6})));
    let call = || {
        let config = Arc::clone(&config);
        let params = json!({"command": "config", "handler": "config", "args": {}, "event": event()});
        f.runtime.call("command/invoke", params, &move || init(config.lock().unwrap().clone()), LONG)
    };
    assert_eq!(call(), Ok(json!({"sides": 6})));
    *config.lock().unwrap() = json!({"sides": 20});
    assert_eq!(call(), Ok(json!({"sides": 6})), "the running process keeps its config");
    f.runtime.stop();
    assert_eq!(call(), Ok(json!({"sides": 20})), "init() is read again at the next start");
}

#[test]
fn an_idle_process_is_stopped() {
    let f = Fixture::with("rt_idle", PYTHON, Mode::LongLived, Some(1024), 1);
    let pid = pid_of(&f);
    let used = Instant::now();
    f.runtime.stop_if_idle();
    assert!(f.runtime.status().running, "not idle yet");
    assert!(
        wait_for(Duration::from_secs(5), || {
            f.runtime.stop_if_idle();
            !f.runtime.status().running
        }),
        "never stopped"
    );
    assert!(used.elapsed() >= Duration::from_secs(1), "stopped before idle_stop_s");
    assert!(reaped(pid));
    assert_ne!(pid_of(&f), pid, "the next call starts it again");
}

#[test]
fn the_environment_is_cleared() {
    let sentinel = format!("ASTRBOT_TEST_SENTINEL_{}", uuid::Uuid::new_v4().simple());
    // SAFETY: the name is unique to this test, and Rust's own environment accesses (the
    // other tests' spawns) take std's environment lock.
    unsafe { std::env::set_var(&sentinel, "secret") };
    let f = Fixture::sh("rt_env");
    let v = f.command("env", json!({}), LONG).unwrap();
    unsafe { std::env::remove_var(&sentinel) };
    let text = v["text"].as_str().unwrap();
    let vars: std::collections::BTreeMap<&str, &str> =
        text.lines().filter_map(|l| l.split_once('=')).collect();
    assert!(!text.contains(&sentinel), "{text}");
    let data = f.root.join("plugin_data/rt_env");
    let data = data.to_str().unwrap();
    assert_eq!(vars.get("HOME"), Some(&data), "{text}");
    assert_eq!(vars.get("TMPDIR"), Some(&data));
    assert_eq!(vars.get("LANG"), Some(&"C.UTF-8"));
    assert_eq!(vars.get("ASTRBOT_PLUGIN_NAME"), Some(&"rt_env"));
    assert_eq!(vars.get("ASTRBOT_PLUGIN_DATA_DIR"), Some(&data));
    assert_eq!(vars.get("ASTRBOT_CALL"), Some(&"command"));
    assert_eq!(vars.get("PWD"), Some(&data), "the data folder is the working directory");
    let allowed = [
        "PATH",
        "LANG",
        "HOME",
        "TMPDIR",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
        "ASTRBOT_PLUGIN_NAME",
        "ASTRBOT_PLUGIN_DIR",
        "ASTRBOT_PLUGIN_DATA_DIR",
        "ASTRBOT_CALL",
        "ASTRBOT_CALL_NAME",
    ];
    for key in vars.keys() {
        assert!(allowed.contains(key), "{key} was passed:\n{text}");
    }
}

#[test]
fn the_limits_are_applied() {
    let f = Fixture::sh("rt_limits");
    let v = f.command("limits", json!({}), LONG).unwrap();
    let text = v["text"].as_str().unwrap();
    let limit = |name: &str| {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{text}"));
        line[name.len()..].split_whitespace().take(2).map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(limit("Max address space"), [(256u64 << 20).to_string(), (256u64 << 20).to_string()]);
    assert_eq!(limit("Max open files"), ["256", "256"]);
    assert_eq!(limit("Max core file size"), ["0", "0"]);
    assert_eq!(limit("Max file size"), [(256u64 << 20).to_string(), (256u64 << 20).to_string()]);
}

#[test]
fn oneshot_round_trips_text_json_and_tools() {
    let f = Fixture::sh("rt_oneshot");
    let v = f.command("echo", json!({"text": "hi there", "times": 3}), LONG).unwrap();
    assert_eq!(v, json!({"text": "you said hi there (3 times)"}));
    let v = f.command("json", json!({}), LONG).unwrap();
    assert_eq!(v, json!({"text": "from json"}), "the JSON-RPC answer wins over other stdout");
    assert_eq!(f.command("remote", json!({}), LONG), Err(CallError::Remote("refused".into())));
    // The request line carries the call and `init`.
    let v = f.command("request", json!({"a": 1}), LONG).unwrap();
    let request: Value = serde_json::from_str(v["text"].as_str().unwrap()).unwrap();
    assert_eq!(request["method"], "command/invoke");
    assert_eq!(request["id"], 1);
    assert_eq!(request["params"]["args"], json!({"a": 1}));
    assert_eq!(request["params"]["init"]["config"], json!({"greeting": "hi"}));
    let params = json!({"name": "roll_dice", "arguments": {"sides": 20}, "event": event()});
    let v = f.runtime.call("tools/call", params, &|| init(json!({})), LONG).unwrap();
    assert_eq!(v, json!({"text": "rolled a 20-sided die"}));
    let err = f.command("fail", json!({}), LONG).unwrap_err();
    assert_eq!(err, CallError::Failed("exit status 3: it went wrong".into()));
    assert!(!f.runtime.status().running, "nothing keeps running");
}

#[test]
fn oneshot_timeout_kills_at_once() {
    let f = Fixture::sh("rt_oneshot_hang");
    let timeout = Duration::from_millis(600);
    let started = Instant::now();
    assert_eq!(f.command("hang", json!({}), timeout), Err(CallError::Timeout(timeout)));
    let took = started.elapsed();
    assert!(took >= timeout && took < timeout + Duration::from_millis(200), "{took:?}");
    let pid: u32 = std::fs::read_to_string(f.root.join("plugin_data/rt_oneshot_hang/hang.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(reaped(pid), "the process is gone and reaped");
    let err = f.command("huge", json!({}), LONG).unwrap_err();
    assert!(err.to_string().contains("a line over 16 MiB"), "{err}");
}

#[test]
fn a_program_without_its_execute_bit_is_refused_clearly() {
    let f = Fixture::sh("rt_noexec");
    let path = f.runtime.spec().exec.command.clone();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = f.command("echo", json!({}), LONG).unwrap_err().to_string();
    assert!(err.contains("is not executable") && err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn a_refused_protocol_version_stops_the_start() {
    let script = "#!/bin/sh\nread l\necho '{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"protocol_version\":2}}'\nexec sleep 60\n";
    let f = Fixture::new("rt_version", script, Mode::LongLived, None);
    let started = Instant::now();
    let err = f.command("echo", json!({}), LONG).unwrap_err().to_string();
    assert_eq!(err, "plugin rt_version speaks protocol version 2, this host speaks 1");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(!f.runtime.status().running);
}

#[test]
fn call_env_names_the_arguments() {
    let params = serde_json::from_value::<Map<String, Value>>(json!({
        "handler": "roll", "args": {"sides": 6, "who-am i": "bob", "big": "x".repeat(5000), "flag": true}
    }))
    .unwrap();
    let env = call_env("command/invoke", &params);
    let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("ASTRBOT_CALL"), Some("command"));
    assert_eq!(get("ASTRBOT_CALL_NAME"), Some("roll"));
    assert_eq!(get("ASTRBOT_ARG_SIDES"), Some("6"));
    assert_eq!(get("ASTRBOT_ARG_WHO_AM_I"), Some("bob"));
    assert_eq!(get("ASTRBOT_ARG_FLAG"), Some("true"));
    assert_eq!(get("ASTRBOT_ARG_BIG"), None, "over 4 KiB: left out");
}

#[test]
fn the_stderr_tail_is_bounded() {
    let mut log = Log::default();
    for i in 0..1000 {
        log.keep(&format!("line {i} {}", "y".repeat(300)));
    }
    assert!(
        log.tail.len() <= TAIL_LINES && log.tail_bytes <= TAIL_BYTES,
        "{} {}",
        log.tail.len(),
        log.tail_bytes
    );
    assert!(log.tail(100).len() <= 100);
    assert!(log.tail(TAIL_BYTES).ends_with(&"y".repeat(300)));
}
