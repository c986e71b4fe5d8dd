//! The command line as a first-time user meets it: help for each command group, and
//! `key list` readable whatever its cells hold.

use std::process::Command;

use crate::support::{BIN, Server, cli};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).env_clear().output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn key_help_said_unknown_command() {
    for group in ["key", "kb", "admin"] {
        for help in ["--help", "-h", "help"] {
            let (code, out, err) = run(&[group, help]);
            assert_eq!(code, 0, "{group} {help}: {err}");
            assert!(
                out.contains("Usage:") && out.contains(&format!("astrbot {group} ")),
                "{group} {help}: {out}"
            );
        }
    }
    let (code, out, err) = run(&["key"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("key needs a subcommand: create, update, list, revoke or delete"), "{err}");
}

#[test]
fn key_list_columns_misaligned_on_long_expiry_dates() {
    let s = Server::start();
    let data = s.data.path();
    for args in [
        &["key", "create", "--name", "a", "--scopes", "chat", "--expires-in-days", "36500"][..],
        &["key", "create", "--name", "a much longer name", "--scopes", "chat,file,im"][..],
        &["key", "create", "--name", "b", "--scopes", "im", "--expires-in-days", "3"][..],
    ] {
        assert_eq!(cli(data, args, None).0, 0);
    }
    let (code, out, err) = cli(data, &["key", "list"], None);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    // Every column starts at the same character in every line.
    let header = lines[0];
    for column in ["PREFIX", "STATE", "LAST_USED", "EXPIRES", "TODAY", "NAME", "SCOPES", "BOT", "WEBHOOK"] {
        let at = header.find(column).unwrap();
        for line in &lines[1..] {
            let before: Vec<char> = line.chars().take(at + 1).collect();
            assert!(
                before.len() == at + 1 && before[at - 1] == ' ' && before[at] != ' ',
                "{column} misaligned:\n{out}"
            );
        }
    }
    assert!(out.contains("21") && !out.contains("+00:00"), "expiry to the second, fixed width:\n{out}");
}
