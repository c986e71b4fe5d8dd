//! The command line: parsed once into a typed [`Command`], then run.
//!
//! `serve` runs the server; `admin password` and `key ...` work on the data folder
//! directly, whether a server is running or not (SQLite serialises the writers, and a
//! running server notices key changes within a second).
//!
//! Start-up refuses what would otherwise fail later and far from its cause: `serve` proves
//! the data folder takes writes and holds `astrbot.lock` in it before it announces its
//! address, and the other commands only work on a data folder that exists, naming it.

mod commands;
mod data;
mod serve;

pub use serve::{Password, ServeArgs};

use std::path::PathBuf;
use std::time::Duration;

use crate::keys::{self, KeyPatch, NewKey};

/// The help text; the scope list comes from the scope definitions.
pub fn usage() -> String {
    format!(
        "\
astrbot: AstrBot's developer HTTP API as a single-binary appliance

Usage:
  astrbot serve [--listen ADDR] [--data DIR] [--max-connections N]
                [--default-daily-limit N] [--max-upload-mb N] [--log-level LEVEL]
  astrbot admin password [--data DIR] [--username NAME]   (new password on stdin)
  astrbot key create --name NAME --scopes SCOPES [--expires-in-days N]
                     [--daily-limit N] [--bot BOT_ID] [--webhook-url URL] [--json] [--data DIR]
  astrbot key update KEY_ID [--name NAME] [--daily-limit N|default] [--expires-in-days N|never]
                     [--bot BOT_ID|none] [--webhook-url URL|none] [--json] [--data DIR]
  astrbot key list [--json] [--data DIR]
  astrbot key revoke KEY_ID [--data DIR]
  astrbot key delete KEY_ID [--data DIR]
  astrbot kb add --collection NAME PATH... [--base-url URL] [--data DIR]   (Markdown, text, HTML)
  astrbot kb list [--data DIR]
  astrbot kb remove NAME [--data DIR]
  astrbot --version

--listen: HOST:PORT, [IPv6]:PORT, or PORT / :PORT on 127.0.0.1; port 0 picks a free port.
--scopes is required: comma-separated, from {scopes}; with --bot it defaults to chat,file.
--bot binds the key to a bot (a config profile, by id or name): it then chats only as that
bot, and its daily limit defaults to 1000.
--max-connections: open connections served at once, 1 to 65536 (default {DEFAULT_MAX_CONNECTIONS}).
Commands other than serve need an existing data folder and print the one they use.

Environment: ASTRBOT_LISTEN (default 127.0.0.1:6185), ASTRBOT_DATA (default ./data),
ASTRBOT_MAX_CONNECTIONS (default {DEFAULT_MAX_CONNECTIONS}), ASTRBOT_ADMIN_PASSWORD (first start only).
Flags win over the environment.
",
        scopes = keys::valid_scopes().join(", ")
    )
}

/// Where `serve` listens when neither `--listen` nor the environment says. 6185 is AstrBot's
/// own port, so programs written for AstrBot find it there.
const DEFAULT_LISTEN: &str = "127.0.0.1:6185";
/// The host of `--listen PORT` and `--listen :PORT`: loopback like the default, because
/// listening on every interface is a decision the operator should spell out (`0.0.0.0:PORT`).
const DEFAULT_HOST: &str = "127.0.0.1";

/// Connections served at once when neither `--max-connections` nor the environment says.
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// The most `--max-connections` accepts: each connection costs two file descriptors and a
/// thread, and the unit's `LimitNOFILE=65536` would be exhausted beyond this.
const MAX_CONNECTIONS_LIMIT: usize = 65536;

#[derive(Debug, PartialEq)]
pub enum Command {
    Serve(ServeArgs),
    AdminPassword { data: PathBuf, username: Option<String> },
    KeyCreate { data: PathBuf, key: NewKey, json: bool },
    KeyUpdate { data: PathBuf, key_id: String, patch: KeyPatch, json: bool },
    KeyList { data: PathBuf, json: bool },
    KeyRevoke { data: PathBuf, key_id: String },
    KeyDelete { data: PathBuf, key_id: String },
    KbAdd { data: PathBuf, collection: String, paths: Vec<PathBuf>, base_url: Option<String> },
    KbList { data: PathBuf },
    KbRemove { data: PathBuf, collection: String },
    Help,
    Version,
}

impl PartialEq for NewKey {
    fn eq(&self, o: &NewKey) -> bool {
        (&self.name, &self.scopes, self.expires_in_days, self.daily_limit, &self.bot_id, &self.webhook_url)
            == (&o.name, &o.scopes, o.expires_in_days, o.daily_limit, &o.bot_id, &o.webhook_url)
    }
}

/// Flags and positional arguments of one subcommand.
struct Args {
    flags: Vec<(String, Option<String>)>,
    positional: Vec<String>,
}

const BOOL_FLAGS: &[&str] = &["--json", "--help", "-h"];

fn split_args(args: &[String]) -> Result<Args, String> {
    let mut flags = Vec::new();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if let Some((name, value)) = arg.split_once('=').filter(|_| arg.starts_with("--")) {
            flags.push((name.to_owned(), Some(value.to_owned())));
        } else if BOOL_FLAGS.contains(&arg.as_str()) {
            flags.push((arg.clone(), None));
        } else if arg.starts_with("--") {
            let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
            flags.push((arg.clone(), Some(value.clone())));
        } else {
            positional.push(arg.clone());
        }
    }
    Ok(Args { flags, positional })
}

impl Args {
    fn take(&mut self, name: &str) -> Option<String> {
        let i = self.flags.iter().position(|(n, _)| n == name)?;
        self.flags.remove(i).1
    }

    fn has(&mut self, name: &str) -> bool {
        let i = self.flags.iter().position(|(n, _)| n == name);
        i.map(|i| self.flags.remove(i)).is_some()
    }

    fn int(&mut self, name: &str) -> Result<Option<i64>, String> {
        self.take(name)
            .map(|v| v.parse::<i64>().map_err(|_| format!("{name} must be an integer, not {v:?}")))
            .transpose()
    }

    fn data(&mut self, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
        self.take("--data").or_else(|| env("ASTRBOT_DATA")).unwrap_or_else(|| "./data".into()).into()
    }

    /// Refuses anything not consumed.
    fn finish(self, max_positional: usize) -> Result<Vec<String>, String> {
        if let Some((flag, _)) = self.flags.first() {
            return Err(format!("unknown option {flag}"));
        }
        if self.positional.len() > max_positional {
            return Err(format!("unexpected argument {:?}", self.positional[max_positional]));
        }
        Ok(self.positional)
    }
}

/// Parses `argv[1..]` with an environment lookup.
pub fn parse(argv: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Command, String> {
    let Some(first) = argv.first() else { return Ok(Command::Help) };
    match first.as_str() {
        "-h" | "--help" | "help" => return Ok(Command::Help),
        "-V" | "--version" | "version" => return Ok(Command::Version),
        _ => {}
    }
    let (sub, rest) = match (first.as_str(), argv.get(1).map(String::as_str)) {
        ("serve", _) => ("serve", &argv[1..]),
        ("admin", Some("password")) => ("admin password", &argv[2..]),
        ("key", Some(s @ ("create" | "update" | "list" | "revoke" | "delete"))) => (s, &argv[2..]),
        ("kb", Some("add")) => ("kb add", &argv[2..]),
        ("kb", Some("list")) => ("kb list", &argv[2..]),
        ("kb", Some("remove")) => ("kb remove", &argv[2..]),
        ("admin" | "key" | "kb", Some("--help" | "-h" | "help")) => return Ok(Command::Help),
        ("admin", _) => return Err(missing_subcommand(argv, "password")),
        ("key", _) => return Err(missing_subcommand(argv, "create, update, list, revoke or delete")),
        ("kb", _) => return Err(missing_subcommand(argv, "add, list or remove")),
        _ => return Err(format!("unknown command {:?}; see astrbot --help", argv.join(" "))),
    };
    let mut a = split_args(rest)?;
    if a.has("--help") || a.has("-h") {
        return Ok(Command::Help);
    }
    let data = a.data(env);
    let command = match sub {
        "serve" => Command::Serve(serve_args(a, data, env)?),
        "admin password" => {
            let username = a.take("--username");
            a.finish(0)?;
            Command::AdminPassword { data, username }
        }
        "create" => key_create_args(a, data)?,
        "update" => key_update_args(a, data)?,
        "list" => {
            let json = a.has("--json");
            a.finish(0)?;
            Command::KeyList { data, json }
        }
        "revoke" | "delete" => {
            let mut pos = a.finish(1)?;
            let key_id = pos.pop().ok_or_else(|| format!("key {sub} needs a KEY_ID"))?;
            if sub == "revoke" {
                Command::KeyRevoke { data, key_id }
            } else {
                Command::KeyDelete { data, key_id }
            }
        }
        "kb add" => {
            let collection = a
                .take("--collection")
                .filter(|c| !c.trim().is_empty())
                .ok_or("kb add needs --collection NAME")?;
            let base_url = a.take("--base-url").map(|u| u.trim().trim_end_matches('/').to_owned());
            if let Some(u) = &base_url
                && (!(u.starts_with("http://") || u.starts_with("https://"))
                    || u.contains(char::is_whitespace))
            {
                return Err(format!("--base-url must be an http or https URL, not {u:?}"));
            }
            let paths: Vec<PathBuf> = a.finish(usize::MAX)?.into_iter().map(PathBuf::from).collect();
            if paths.is_empty() {
                return Err("kb add needs at least one PATH".into());
            }
            Command::KbAdd { data, collection, paths, base_url }
        }
        "kb list" => {
            a.finish(0)?;
            Command::KbList { data }
        }
        "kb remove" => {
            let mut pos = a.finish(1)?;
            let collection = pos.pop().ok_or("kb remove needs a collection NAME")?;
            Command::KbRemove { data, collection }
        }
        _ => unreachable!("matched above"),
    };
    Ok(command)
}

/// The refusal of `admin`, `key` or `kb` without a known subcommand, naming the ones there are.
fn missing_subcommand(argv: &[String], known: &str) -> String {
    match argv.get(1) {
        Some(_) => {
            format!("unknown command {:?}: {} takes {known}; see astrbot --help", argv.join(" "), argv[0])
        }
        None => format!("{} needs a subcommand: {known}; see astrbot --help", argv[0]),
    }
}

/// The arguments of `serve`, flags first, then the environment, then the defaults.
fn serve_args(mut a: Args, data: PathBuf, env: &dyn Fn(&str) -> Option<String>) -> Result<ServeArgs, String> {
    let listen = match a.take("--listen") {
        Some(v) => listen_addr("--listen", &v)?,
        None => match env("ASTRBOT_LISTEN") {
            Some(v) => listen_addr("ASTRBOT_LISTEN", &v)?,
            None => DEFAULT_LISTEN.to_owned(),
        },
    };
    let max_connections = match a.take("--max-connections") {
        Some(v) => max_connections("--max-connections", &v)?,
        None => match env("ASTRBOT_MAX_CONNECTIONS") {
            Some(v) => max_connections("ASTRBOT_MAX_CONNECTIONS", &v)?,
            None => DEFAULT_MAX_CONNECTIONS,
        },
    };
    let default_daily_limit = a.int("--default-daily-limit")?;
    if default_daily_limit.is_some_and(|n| n < 0) {
        return Err("--default-daily-limit must be 0 or greater".into());
    }
    let max_upload_mb = a.int("--max-upload-mb")?.unwrap_or(64);
    if !(1..=1_000_000).contains(&max_upload_mb) {
        return Err("--max-upload-mb must be between 1 and 1000000".into());
    }
    let level = a.take("--log-level").unwrap_or_else(|| "info".into());
    let log_level = level
        .parse()
        .map_err(|_| format!("--log-level must be error, warn, info, debug or trace, not {level:?}"))?;
    let webhook_backoff = webhook_backoff(env("ASTRBOT_WEBHOOK_BACKOFF_MS"))?;
    a.finish(0)?;
    Ok(ServeArgs {
        listen,
        data,
        max_connections,
        default_daily_limit: default_daily_limit.filter(|n| *n > 0),
        max_upload_mb: max_upload_mb as u64,
        log_level,
        admin_password: env("ASTRBOT_ADMIN_PASSWORD").map(Password),
        webhook_backoff,
    })
}

/// The webhook retry delays: `ASTRBOT_WEBHOOK_BACKOFF_MS` (comma-separated milliseconds,
/// each from 1 to one day; for testing receivers), else the default schedule.
fn webhook_backoff(value: Option<String>) -> Result<Vec<Duration>, String> {
    let Some(value) = value else {
        return Ok(crate::webhooks::DEFAULT_BACKOFF.iter().map(|s| Duration::from_secs(*s)).collect());
    };
    let bad = || {
        format!(
            "ASTRBOT_WEBHOOK_BACKOFF_MS must be comma-separated milliseconds from 1 to 86400000, not {value:?}"
        )
    };
    let delays: Vec<Duration> = value
        .split(',')
        .map(|v| {
            v.trim().parse::<u64>().ok().filter(|n| (1..=86_400_000).contains(n)).map(Duration::from_millis)
        })
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    if delays.is_empty() || delays.len() > 32 {
        return Err(bad());
    }
    Ok(delays)
}

/// The arguments of `key create`.
fn key_create_args(mut a: Args, data: PathBuf) -> Result<Command, String> {
    let name = a.take("--name");
    let bot_id = a.take("--bot");
    // Required unless the key is a bot's: without it the key would silently get every
    // default scope. A bot's key chats and uploads what it chats about.
    let scopes = match (a.take("--scopes"), &bot_id) {
        (Some(scopes), _) => scopes,
        (None, Some(_)) => "chat,file".to_owned(),
        (None, None) => {
            return Err(format!(
                "key create needs --scopes, a comma-separated list from: {}",
                keys::valid_scopes().join(", ")
            ));
        }
    };
    let scopes =
        Some(scopes.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect());
    let key = NewKey {
        name,
        scopes,
        expires_in_days: a.int("--expires-in-days")?,
        daily_limit: a.int("--daily-limit")?,
        bot_id,
        webhook_url: a.take("--webhook-url"),
    };
    let json = a.has("--json");
    a.finish(0)?;
    Ok(Command::KeyCreate { data, key, json })
}

/// The arguments of `key update`: each flag changes one field; the words `default`,
/// `never` and `none` clear one.
fn key_update_args(mut a: Args, data: PathBuf) -> Result<Command, String> {
    let cleared = |a: &mut Args, flag: &str, word: &str| -> Option<Option<String>> {
        a.take(flag).map(|v| if v == word { None } else { Some(v) })
    };
    let int = |flag: &str, v: Option<Option<String>>| -> Result<Option<Option<i64>>, String> {
        v.map(|v| {
            v.map(|n| n.parse::<i64>().map_err(|_| format!("{flag} must be an integer, not {n:?}")))
                .transpose()
        })
        .transpose()
    };
    let name = a.take("--name");
    let daily_limit = cleared(&mut a, "--daily-limit", "default");
    let expires = cleared(&mut a, "--expires-in-days", "never");
    let patch = KeyPatch {
        name,
        daily_limit: int("--daily-limit", daily_limit)?,
        expires_in_days: int("--expires-in-days", expires)?,
        bot_id: cleared(&mut a, "--bot", "none"),
        webhook_url: cleared(&mut a, "--webhook-url", "none"),
    };
    let json = a.has("--json");
    let mut pos = a.finish(1)?;
    let key_id = pos.pop().ok_or("key update needs a KEY_ID")?;
    if patch == KeyPatch::default() {
        return Err(
            "key update needs at least one of --name, --daily-limit, --expires-in-days, --bot, --webhook-url"
                .into(),
        );
    }
    Ok(Command::KeyUpdate { data, key_id, patch, json })
}

/// `--listen` or `ASTRBOT_LISTEN` (named by `source`) as an address `bind` takes: `PORT` and
/// `:PORT` listen on loopback, `HOST:PORT` and `[IPv6]:PORT` as given (a host name is
/// resolved when binding). Port 0 picks a free port.
fn listen_addr(source: &str, value: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "{source} must be PORT, :PORT, HOST:PORT or [IPv6]:PORT (for example 6185, :0, \
             0.0.0.0:6185 or [::1]:6185), not {value:?}"
        )
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|_| p.bytes().all(|b| b.is_ascii_digit()));
    let v = value.trim();
    if let Some(p) = port(v).or_else(|| v.strip_prefix(':').and_then(port)) {
        return Ok(format!("{DEFAULT_HOST}:{p}"));
    }
    if let Some(rest) = v.strip_prefix('[') {
        let (host, p) = rest.split_once("]:").ok_or_else(bad)?;
        host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        let p = port(p).ok_or_else(bad)?;
        return Ok(format!("[{host}]:{p}"));
    }
    let (host, p) = v.rsplit_once(':').ok_or_else(bad)?;
    let p = port(p).ok_or_else(bad)?;
    // A bare IPv6 address has colons of its own and needs brackets; a host name is
    // letters, digits, dots and dashes.
    let host_ok =
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !host_ok {
        return Err(bad());
    }
    Ok(format!("{host}:{p}"))
}

/// `--max-connections` or `ASTRBOT_MAX_CONNECTIONS` (named by `source`), checked.
fn max_connections(source: &str, value: &str) -> Result<usize, String> {
    value.parse::<usize>().ok().filter(|n| (1..=MAX_CONNECTIONS_LIMIT).contains(n)).ok_or_else(|| {
        format!("{source} must be an integer from 1 to {MAX_CONNECTIONS_LIMIT}, not {value:?}")
    })
}

/// Runs a command; the error is the one line `main` prints.
pub fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Help => {
            print!("{}", usage());
            Ok(())
        }
        Command::Version => {
            println!("astrbot {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Serve(args) => serve::serve(args),
        Command::AdminPassword { data, username } => commands::admin_password(&data, username),
        Command::KeyCreate { data, key, json } => commands::key_create(&data, &key, json),
        Command::KeyUpdate { data, key_id, patch, json } => {
            commands::key_update(&data, &key_id, &patch, json)
        }
        Command::KeyList { data, json } => commands::key_list(&data, json),
        Command::KeyRevoke { data, key_id } => commands::key_revoke(&data, &key_id),
        Command::KeyDelete { data, key_id } => commands::key_delete(&data, &key_id),
        Command::KbAdd { data, collection, paths, base_url } => {
            commands::kb_add(&data, &collection, &paths, base_url.as_deref())
        }
        Command::KbList { data } => commands::kb_list(&data),
        Command::KbRemove { data, collection } => commands::kb_remove(&data, &collection),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn serve_flags_win_over_env() {
        let env = |k: &str| match k {
            "ASTRBOT_LISTEN" => Some("0.0.0.0:1".to_owned()),
            "ASTRBOT_DATA" => Some("/env".to_owned()),
            _ => None,
        };
        let Command::Serve(s) =
            parse(&args("serve --listen 127.0.0.1:0 --default-daily-limit 5"), &env).unwrap()
        else {
            panic!()
        };
        assert_eq!((s.listen.as_str(), s.data.to_str().unwrap()), ("127.0.0.1:0", "/env"));
        assert_eq!(s.default_daily_limit, Some(5));
        let Command::Serve(s) = parse(&args("serve"), &no_env).unwrap() else { panic!() };
        assert_eq!(
            (s.listen.as_str(), s.data.to_str().unwrap(), s.max_upload_mb),
            ("127.0.0.1:6185", "./data", 64)
        );
    }

    #[test]
    fn admin_password_is_read_with_the_arguments_and_never_printed() {
        let env = |k: &str| (k == "ASTRBOT_ADMIN_PASSWORD").then(|| "correct horse".to_owned());
        let Command::Serve(s) = parse(&args("serve"), &env).unwrap() else { panic!() };
        assert_eq!(s.admin_password.as_ref().and_then(Password::given), Some("correct horse"));
        assert!(!format!("{s:?}").contains("horse"), "{s:?}");
        let Command::Serve(s) = parse(&args("serve"), &no_env).unwrap() else { panic!() };
        assert_eq!(s.admin_password, None);
        let empty = |k: &str| (k == "ASTRBOT_ADMIN_PASSWORD").then(String::new);
        let Command::Serve(s) = parse(&args("serve"), &empty).unwrap() else { panic!() };
        assert_eq!(s.admin_password.as_ref().and_then(Password::given), None, "empty is not a password");
    }

    #[test]
    fn key_commands() {
        let c = parse(
            &args("key create --name bot --scopes chat,file --daily-limit 3 --json --data /d"),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            c,
            Command::KeyCreate {
                data: "/d".into(),
                key: NewKey {
                    name: Some("bot".into()),
                    scopes: Some(vec!["chat".into(), "file".into()]),
                    expires_in_days: None,
                    daily_limit: Some(3),
                    bot_id: None,
                    webhook_url: None,
                },
                json: true
            }
        );
        assert_eq!(
            parse(&args("key revoke abc"), &no_env).unwrap(),
            Command::KeyRevoke { data: "./data".into(), key_id: "abc".into() }
        );
        assert!(parse(&args("key revoke"), &no_env).is_err());
        assert!(parse(&args("key list --bogus x"), &no_env).unwrap_err().contains("unknown option --bogus"));
        assert!(parse(&args("serve --max-upload-mb x"), &no_env).is_err());
        assert!(parse(&args("frobnicate"), &no_env).is_err());
        assert_eq!(parse(&args("key --help"), &no_env).unwrap(), Command::Help);
    }

    #[test]
    fn group_help_prints_the_usage_and_a_bare_group_names_its_subcommands() {
        for group in ["key", "kb", "admin"] {
            for help in ["--help", "-h", "help"] {
                assert_eq!(
                    parse(&args(&format!("{group} {help}")), &no_env),
                    Ok(Command::Help),
                    "{group} {help}"
                );
            }
        }
        assert_eq!(parse(&args("key create --help"), &no_env), Ok(Command::Help));
        let err = parse(&args("key"), &no_env).unwrap_err();
        assert!(err.contains("key needs a subcommand: create, update, list, revoke or delete"), "{err}");
        let err = parse(&args("kb frob"), &no_env).unwrap_err();
        assert!(err.contains("kb takes add, list or remove"), "{err}");
    }

    #[test]
    fn listen_takes_port_colon_port_host_port_and_bracketed_ipv6() {
        let listen =
            |v: &str| match parse(&["serve".to_owned(), "--listen".to_owned(), v.to_owned()], &no_env) {
                Ok(Command::Serve(s)) => Ok(s.listen),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e),
            };
        for (given, bound) in [
            ("17220", "127.0.0.1:17220"),
            (":0", "127.0.0.1:0"),
            ("0", "127.0.0.1:0"),
            ("0.0.0.0:6185", "0.0.0.0:6185"),
            ("localhost:80", "localhost:80"),
            ("[::1]:0", "[::1]:0"),
            ("[::]:6185", "[::]:6185"),
        ] {
            assert_eq!(listen(given).as_deref(), Ok(bound), "{given}");
        }
        for bad in ["", ":", "x", "65536", ":-1", "host:", "::1:80", "[::1]", "[nope]:80", "a b:1", "1:+2"] {
            let err = listen(bad).unwrap_err();
            assert_eq!(
                err,
                format!(
                    "--listen must be PORT, :PORT, HOST:PORT or [IPv6]:PORT (for example 6185, :0, \
                     0.0.0.0:6185 or [::1]:6185), not {bad:?}"
                )
            );
        }
        let env = |k: &str| (k == "ASTRBOT_LISTEN").then(|| "7000".to_owned());
        let Command::Serve(s) = parse(&args("serve"), &env).unwrap() else { panic!() };
        assert_eq!(s.listen, "127.0.0.1:7000");
        let env = |k: &str| (k == "ASTRBOT_LISTEN").then(|| "nope".to_owned());
        assert!(parse(&args("serve"), &env).unwrap_err().starts_with("ASTRBOT_LISTEN must be PORT"));
    }

    #[test]
    fn key_update_flags_change_or_clear_one_field_each() {
        let c = parse(&args("key update k1 --bot shop --daily-limit default --webhook-url none"), &no_env)
            .unwrap();
        let Command::KeyUpdate { key_id, patch, json, .. } = c else { panic!("{c:?}") };
        assert_eq!((key_id.as_str(), json), ("k1", false));
        assert_eq!(
            patch,
            KeyPatch {
                bot_id: Some(Some("shop".into())),
                daily_limit: Some(None),
                webhook_url: Some(None),
                ..KeyPatch::default()
            }
        );
        let c = parse(&args("key update k1 --expires-in-days 7 --name n --json"), &no_env).unwrap();
        let Command::KeyUpdate { patch, json, .. } = c else { panic!("{c:?}") };
        assert!(json);
        assert_eq!((patch.expires_in_days, patch.name.as_deref()), (Some(Some(7)), Some("n")));
        assert!(parse(&args("key update k1"), &no_env).unwrap_err().contains("at least one"));
        assert!(parse(&args("key update --name n"), &no_env).unwrap_err().contains("KEY_ID"));
        assert!(parse(&args("key update k1 --daily-limit lots"), &no_env).unwrap_err().contains("integer"));
        let c = parse(&args("key create --name w --bot shop"), &no_env).unwrap();
        let Command::KeyCreate { key, .. } = c else { panic!("{c:?}") };
        assert_eq!(key.scopes, Some(vec!["chat".to_owned(), "file".to_owned()]), "a bot's key: chat,file");
        assert_eq!(key.bot_id.as_deref(), Some("shop"));
    }

    #[test]
    fn webhook_backoff_from_env() {
        assert_eq!(webhook_backoff(None).unwrap().len(), crate::webhooks::DEFAULT_BACKOFF.len());
        assert_eq!(
            webhook_backoff(Some("50, 100".into())).unwrap(),
            vec![Duration::from_millis(50), Duration::from_millis(100)]
        );
        for bad in ["", "0", "x", "18446744073709551616", "86400001", "1,,2"] {
            assert!(webhook_backoff(Some(bad.into())).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_create_requires_scopes_and_lists_them() {
        let err = parse(&args("key create --name bot"), &no_env).unwrap_err();
        assert!(err.starts_with("key create needs --scopes"), "{err}");
        for scope in keys::valid_scopes() {
            assert!(err.contains(scope), "{scope} listed in {err}");
            assert!(usage().contains(scope), "{scope} listed in the usage");
        }
    }

    #[test]
    fn max_connections_from_flag_or_env_within_bounds() {
        let serve = |argv: &str, env: &dyn Fn(&str) -> Option<String>| match parse(&args(argv), env) {
            Ok(Command::Serve(s)) => Ok(s.max_connections),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        let env = |k: &str| (k == "ASTRBOT_MAX_CONNECTIONS").then(|| "77".to_owned());
        assert_eq!(serve("serve", &no_env), Ok(1024));
        assert_eq!(serve("serve", &env), Ok(77));
        assert_eq!(serve("serve --max-connections 5", &env), Ok(5), "the flag wins");
        assert_eq!(serve("serve --max-connections=65536", &no_env), Ok(65536));
        assert_eq!(serve("serve --max-connections 1", &no_env), Ok(1));
        for bad in ["0", "65537", "-1", "x", "1e3", ""] {
            let err = serve(&format!("serve --max-connections={bad}"), &no_env).unwrap_err();
            assert_eq!(err, format!("--max-connections must be an integer from 1 to 65536, not {bad:?}"));
        }
        let env = |k: &str| (k == "ASTRBOT_MAX_CONNECTIONS").then(|| "0".to_owned());
        assert!(serve("serve", &env).unwrap_err().starts_with("ASTRBOT_MAX_CONNECTIONS must be an integer"));
    }
}
