//! README's examples, run as written against a fresh server: every shell block from "First
//! chat" to "Command line" in order as one script (so the ids each block captures are what
//! the next one uses, and a key lacking a scope fails the run), and the Python, JavaScript
//! and PHP chat examples, whose streamed text and JSON answer must come out on lines of
//! their own. Only the address, the binary's path, the admin password and the uploaded
//! file's path are substituted.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{ADMIN_PASSWORD, BIN, Server, TempDir};

const README: &str = include_str!("../../README.md");

/// The fenced blocks of `lang` in README between the headings `from` and `to`.
fn blocks(lang: &str, from: &str, to: &str) -> Vec<String> {
    let start = README.find(from).expect("start heading");
    let end = start + README[start..].find(to).expect("end heading");
    let mut out = Vec::new();
    let mut rest = &README[start..end];
    let fence = format!("```{lang}\n");
    while let Some(i) = rest.find(&fence) {
        let body = &rest[i + fence.len()..];
        let close = body.find("\n```").expect("closed block");
        out.push(body[..close + 1].to_owned());
        rest = &body[close..];
    }
    out
}

/// The text as run here: README's address, binary and password replaced.
fn localise(s: &Server, text: &str) -> String {
    let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    text.replace("http://127.0.0.1:6185", &format!("http://{}", s.addr))
        .replace("./target/release/astrbot", BIN)
        .replace("YOUR-PASSWORD", ADMIN_PASSWORD)
        .replace("@README.md", &format!("@{readme}"))
}

/// Runs `program args` in `dir` with the server's data folder and a key in the environment.
fn run(s: &Server, program: &str, args: &[&str], dir: &Path, key: &str) -> (i32, String, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("ASTRBOT_DATA", s.data.path())
        .env("ASTRBOT_KEY", key)
        .stdin(Stdio::null())
        .output()
        .expect("run an example");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn installed(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn readme_shell_examples_run_in_order_with_keys_that_fit() {
    let s = Server::start();
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path()).unwrap();
    let script = localise(&s, &blocks("bash", "## First chat", "## Command line").concat());
    assert!(script.contains("$SETUP_KEY") && script.contains("$FOLDER_ID") && script.contains("$CONF_ID"));
    for placeholder in ["ATTACHMENT_ID", "FOLDER_ID", "CONF_ID", "KEY_ID"] {
        let uncaptured =
            script.lines().any(|l| l.contains(placeholder) && !l.contains(&format!("${placeholder}")))
                && !script.contains(&format!("{placeholder}=$("));
        assert!(!uncaptured, "{placeholder} is used but never captured");
    }
    let (code, out, err) = run(&s, "bash", &["-c", &format!("set -eo pipefail\n{script}")], dir.path(), "");
    // The answers are lines of JSON; the pages fetched at the end quote error messages.
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("{\"status\":\"error\"")).collect();
    let failed = code != 0 || !errors.is_empty();
    assert!(
        !failed,
        "README's shell examples failed (exit {code}, errors {errors:?})\n--- stdout\n{out}\n--- stderr\n{err}\n--- log\n{}",
        s.log()
    );
    assert!(out.contains("\"routed\":true"), "the config route example ran to its end:\n{out}");
}

#[test]
fn readme_login_one_liner_prints_the_servers_message_on_a_wrong_password() {
    let s = Server::start();
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path()).unwrap();
    let block = blocks("bash", "## Use it with curl", "Create an API key").concat();
    let script = localise(&s, &block).replace(ADMIN_PASSWORD, "not-the-password");
    let (code, out, err) =
        run(&s, "bash", &["-c", &format!("{script}\necho \"token=[$ADMIN_TOKEN]\"")], dir.path(), "");
    assert_eq!((code, out.as_str()), (0, "token=[]\n"), "{err}");
    assert_eq!(err, "login failed: Invalid username or password\n", "no Python traceback");
}

/// Runs a chat example and checks the streamed text and the JSON answer each end a line:
/// the built-in provider answers the same question with the same passage both times.
fn check_chat_example(s: &Server, program: &str, file: &str, lang: &str) {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path()).unwrap();
    let source = blocks(lang, "## First chat", "## Use it with curl");
    assert_eq!(source.len(), 1, "one {lang} example");
    std::fs::write(dir.path().join(file), localise(s, &source[0])).unwrap();
    let key =
        crate::support::cli(s.data.path(), &["key", "create", "--name", "ex", "--scopes", "chat"], None).1;
    let (code, out, err) = run(s, program, &[file], dir.path(), key.trim());
    assert_eq!(code, 0, "{program} {file} failed: {err}");
    let half = out.len() / 2;
    assert!(
        out.len() > 20 && out.ends_with('\n') && out.is_char_boundary(half) && out[..half] == out[half..],
        "{program}: the streamed text and the JSON answer, each ending its line:\n{out}"
    );
}

#[test]
fn readme_python_example_prints_each_answer_on_its_own_line() {
    let s = Server::start();
    check_chat_example(&s, "python3", "chat.py", "python");
}

#[test]
fn readme_javascript_example_is_a_module_and_prints_each_answer_on_its_own_line() {
    assert!(README.contains("save it as `chat.mjs`"), "README says the example needs .mjs");
    if !installed("node") {
        println!("skipped: node is not installed");
        return;
    }
    let s = Server::start();
    check_chat_example(&s, "node", "chat.mjs", "javascript");
}

#[test]
fn readme_php_example_prints_each_answer_on_its_own_line() {
    let has_curl = Command::new("php").args(["-r", "exit(function_exists('curl_init') ? 0 : 1);"]).status();
    if !has_curl.is_ok_and(|s| s.success()) {
        println!("skipped: php with the curl extension is not installed");
        return;
    }
    let s = Server::start();
    check_chat_example(&s, "php", "chat.php", "php");
}

#[test]
fn readme_lists_every_bundled_guide() {
    // src/docs.rs is the list the server serves.
    let table = include_str!("../../src/docs.rs");
    let slugs: Vec<&str> =
        table.lines().filter_map(|l| l.trim().strip_prefix("(\"")?.split('"').next()).collect();
    assert!(slugs.len() >= 10, "{slugs:?}");
    for slug in slugs {
        assert!(README.contains(&format!("`{slug}`")), "README's guide list names {slug}");
    }
}
