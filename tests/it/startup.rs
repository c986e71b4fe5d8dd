//! Start-up and command-line safety: `serve` refuses a data folder it cannot write and a
//! data folder another `serve` holds; the other commands refuse a data folder that does not
//! exist and say which one they use; `key create` needs `--scopes`; `--max-connections`.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::Value;

use crate::support::{ADMIN_PASSWORD, BIN, Server, TempDir, cli};

/// What one `serve` did: its exit code (`None` if it listened and was killed), the first
/// line on stdout, and everything on stderr.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `serve` on `data` on a free port, with a clean environment.
fn serve_cmd(data: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"]).arg(data).args(extra);
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.env("ASTRBOT_ADMIN_PASSWORD", ADMIN_PASSWORD);
    cmd
}

/// Runs `cmd` until it either exits or announces that it listens (then kills it), so a
/// test of a refusal cannot hang on a server that wrongly started.
fn run_until_listening(mut cmd: Command) -> Outcome {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start astrbot");
    let mut stdout = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut stdout).unwrap();
    let listened = stdout.starts_with("listening on ");
    if listened {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    Outcome { code: if listened { None } else { status.code() }, stdout, stderr }
}

/// `serve` on `data`, as `uid` if given.
fn serve_once(data: &Path, extra: &[&str], uid: Option<u32>) -> Outcome {
    let mut cmd = serve_cmd(data, extra);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    run_until_listening(cmd)
}

/// The absolute form of a temporary folder, as the binary prints it.
fn abs(p: &Path) -> String {
    std::path::absolute(p).unwrap().display().to_string()
}

/// The user a test runs the server as so that permission bits apply: `nobody` when the
/// tests run as root (root writes through any mode), else the current user.
fn unprivileged_uid() -> (Option<u32>, u32) {
    match std::fs::metadata("/proc/self").unwrap().uid() {
        0 => (Some(65534), 65534),
        me => (None, me),
    }
}

/// Gives `dir` and everything in it to `uid`.
fn chown_all(dir: &Path, uid: u32) {
    std::os::unix::fs::chown(dir, Some(uid), Some(uid)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        std::os::unix::fs::chown(entry.unwrap().path(), Some(uid), Some(uid)).unwrap();
    }
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A data folder a server has run on and stopped, given to the unprivileged user.
fn used_data_folder() -> (Arc<TempDir>, Option<u32>) {
    let data = Arc::new(TempDir::new());
    let s = Server::start_with(data.clone(), &[]);
    assert!(s.terminate().success());
    let (run_as, uid) = unprivileged_uid();
    chown_all(data.path(), uid);
    (data, run_as)
}

#[test]
fn a_read_only_data_folder_printed_listening_and_failed_at_the_first_login() {
    let (data, run_as) = used_data_folder();
    for entry in std::fs::read_dir(data.path()).unwrap() {
        set_mode(&entry.unwrap().path(), 0o400);
    }
    set_mode(data.path(), 0o500);
    let out = serve_once(data.path(), &[], run_as);
    set_mode(data.path(), 0o700);
    assert_eq!(out.code, Some(2), "it must refuse to start\nstdout: {}\nstderr: {}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "", "it never listened");
    let expected = format!("astrbot: the data folder {} is not writable: ", abs(data.path()));
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
}

#[test]
fn a_read_only_database_in_a_writable_folder_printed_listening() {
    let (data, run_as) = used_data_folder();
    for entry in std::fs::read_dir(data.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_str().unwrap().starts_with("astrbot.db") {
            set_mode(&path, 0o400);
        }
    }
    let out = serve_once(data.path(), &[], run_as);
    assert_eq!(out.code, Some(2), "it must refuse to start\nstdout: {}\nstderr: {}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "", "it never listened");
    let expected = format!("astrbot: the data folder {} is not writable: ", abs(data.path()));
    assert!(out.stderr.contains(&expected) && out.stderr.contains("astrbot.db"), "{}", out.stderr);
}

#[test]
fn a_data_folder_root_cannot_write_either_is_refused_with_the_same_message() {
    // /proc/self/fd is a mode 0500 folder in which nobody, root included, creates files.
    let out = serve_once(Path::new("/proc/self/fd"), &[], None);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("astrbot: the data folder /proc/self/fd is not writable: "),
        "{}",
        out.stderr
    );
    // A data "folder" that is a regular file.
    let tmp = TempDir::new();
    std::fs::create_dir_all(tmp.path()).unwrap();
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let out = serve_once(&file, &[], None);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("the data folder {} is not a folder", abs(&file))),
        "{}",
        out.stderr
    );
}

#[test]
fn a_second_serve_on_the_same_data_folder_was_not_refused() {
    let s = Server::start();
    let pid = s.child.id();
    let lock = std::fs::read_to_string(s.data.path().join("astrbot.lock")).unwrap_or_default();
    assert_eq!(lock.trim(), pid.to_string(), "the lock file names its holder");
    let out = serve_once(s.data.path(), &[], None);
    assert_eq!(out.code, Some(2), "the second serve must refuse\nstdout: {}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains(&format!("another astrbot (pid {pid}) is already serving {}", abs(s.data.path()))),
        "{}",
        out.stderr
    );
    // The first server is untouched, and the other commands still work beside it.
    s.expect(&s.get("/healthz", &[]), 200);
    let (code, _, err) = cli(s.data.path(), &["key", "list"], None);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn kill_9_of_the_holder_releases_the_serve_lock() {
    let data = Arc::new(TempDir::new());
    let mut first = Server::start_with(data.clone(), &[]);
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    // The stale pid in the lock file does not matter: the kernel dropped the lock.
    let second = Server::start_with(data.clone(), &[]);
    second.expect(&second.get("/healthz", &[]), 200);
    let out = serve_once(data.path(), &[], None);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("(pid {})", second.child.id())), "{}", out.stderr);
}

/// Runs the binary in `cwd` without `--data` and with a clean environment.
fn cli_in(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out =
        Command::new(BIN).args(args).current_dir(cwd).env_clear().stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn key_create_from_the_wrong_folder_made_a_new_data_folder_and_printed_a_useless_key() {
    let cwd = TempDir::new();
    std::fs::create_dir_all(cwd.path()).unwrap();
    let expected = format!(
        "astrbot: no data folder at {}/data: run `astrbot serve` first or pass --data",
        abs(cwd.path())
    );
    for args in [
        &["key", "create", "--name", "x", "--scopes", "im"][..],
        &["key", "list"],
        &["key", "revoke", "some-id"],
        &["key", "delete", "some-id"],
        &["admin", "password"],
        &["kb", "list"],
        &["kb", "remove", "home"],
    ] {
        let (code, out, err) = cli_in(cwd.path(), args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert_eq!(out, "", "{args:?} printed nothing on stdout");
        assert!(err.contains(&expected), "{args:?}: {err}");
        assert!(!cwd.path().join("data").exists(), "{args:?} created a data folder");
    }
}

#[test]
fn cli_commands_did_not_say_which_data_folder_they_use() {
    let cwd = TempDir::new();
    std::fs::create_dir_all(cwd.path().join("data")).unwrap();
    let (code, _, err) = cli_in(cwd.path(), &["key", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("using data folder {}/data\n", abs(cwd.path()))), "{err}");
    let (code, out, err) = cli_in(cwd.path(), &["key", "list", "--json", "--data", "./data"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "[]", "stdout stays machine-readable");
    assert!(err.contains(&format!("using data folder {}/data", abs(cwd.path()))), "{err}");
}

#[test]
fn key_create_without_scopes_silently_granted_every_scope() {
    let data = TempDir::new();
    std::fs::create_dir_all(data.path()).unwrap();
    let (code, out, err) = cli(data.path(), &["key", "create", "--name", "all"], None);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(out, "", "no key printed");
    assert!(err.contains("key create needs --scopes"), "{err}");
    for scope in ["bot", "chat", "config", "file", "im", "chat:admin", "config:edit_admin"] {
        assert!(err.contains(scope), "the error lists {scope}: {err}");
    }
    let (_, list, _) = cli(data.path(), &["key", "list", "--json"], None);
    assert_eq!(serde_json::from_str::<Value>(&list).unwrap(), serde_json::json!([]), "no key was made");
    // The usage text says so too, also under `key --help`.
    let (code, help, _) = cli_in(data.path(), &["key", "--help"]);
    assert_eq!(code, 0);
    assert!(help.contains("--scopes") && help.contains("required"), "{help}");
}

#[test]
fn max_connections_option_is_accepted() {
    let s = Server::start_with(Arc::new(TempDir::new()), &["--max-connections", "8"]);
    s.expect(&s.get("/healthz", &[]), 200);
}

#[test]
fn max_connections_outside_1_to_65536_is_refused() {
    let tmp = TempDir::new();
    for bad in ["0", "65537", "many", "-1"] {
        let out = serve_once(tmp.path(), &["--max-connections", bad], None);
        assert_eq!(out.code, Some(2), "{bad}: {}", out.stderr);
        assert!(
            out.stderr.contains("--max-connections must be an integer from 1 to 65536"),
            "{}",
            out.stderr
        );
    }
    let mut cmd = serve_cmd(tmp.path(), &[]);
    cmd.env("ASTRBOT_MAX_CONNECTIONS", "0");
    let out = run_until_listening(cmd);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("ASTRBOT_MAX_CONNECTIONS must be an integer from 1 to 65536"),
        "{}",
        out.stderr
    );
}

#[test]
fn max_connections_is_documented_in_serve_help() {
    let (_, help, _) = cli_in(Path::new("/"), &["serve", "--help"]);
    assert!(help.contains("--max-connections N") && help.contains("ASTRBOT_MAX_CONNECTIONS"), "{help}");
}

/// `serve --listen VALUE` on a fresh data folder, nothing else.
fn serve_listen(data: &Path, listen: &str) -> Outcome {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", listen, "--data"]).arg(data);
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.env("ASTRBOT_ADMIN_PASSWORD", ADMIN_PASSWORD);
    run_until_listening(cmd)
}

#[test]
fn listen_colon_0_and_a_bare_port_failed_to_parse() {
    let tmp = TempDir::new();
    let out = serve_listen(tmp.path(), ":0");
    assert_eq!(out.code, None, "{}", out.stderr);
    let port = out.stdout.trim().strip_prefix("listening on http://127.0.0.1:").expect("loopback");
    assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "{}", out.stdout);
    // A bare port: take a free one, release it, and ask for it by number.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = serve_listen(tmp.path(), &free.to_string());
    assert_eq!(out.stdout.trim(), format!("listening on http://127.0.0.1:{free}"), "{}", out.stderr);
    let out = serve_listen(tmp.path(), "[::1]:0");
    if out.code.is_none() {
        assert!(out.stdout.starts_with("listening on http://[::1]:"), "{}", out.stdout);
    } else {
        // A machine without IPv6 on loopback says so rather than failing to parse.
        assert!(out.stderr.contains("cannot listen on [::1]:0"), "{}", out.stderr);
    }
}

#[test]
fn an_unparseable_listen_address_says_which_forms_are_expected() {
    let tmp = TempDir::new();
    for bad in ["localhost", "::1:80", "127.0.0.1:http", "99999"] {
        let out = serve_listen(tmp.path(), bad);
        assert_eq!(out.code, Some(2), "{bad}: {}", out.stderr);
        assert!(
            out.stderr.contains("--listen must be PORT, :PORT, HOST:PORT or [IPv6]:PORT"),
            "{bad}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn address_already_in_use_suggests_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let tmp = TempDir::new();
    let out = serve_listen(tmp.path(), &addr);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("cannot listen on {addr}: Address already in use")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("AstrBot itself uses 6185"), "{}", out.stderr);
    assert!(out.stderr.contains("--listen :0 for a free one"), "{}", out.stderr);
}
