//! `serve`: everything that can refuse the start runs before the address is announced
//! (the data folder is writable, not served by another process, the first password is
//! acceptable); then the listener, the bundled guides' index, the upkeep thread, and the
//! server until a signal.

use std::io::{self, Write};
use std::sync::Arc;

use super::data::{absolute, lock_data_dir, open_store, prepare_data_dir, probe_data_dir, probe_database};
use crate::app::{App, Settings};
use crate::auth::DEFAULT_ADMIN;
use crate::db::{self, Db};
use crate::secrets;
use crate::timefmt::now_micros;
use crate::webhooks::Outbox;
use std::path::PathBuf;

#[derive(Debug, PartialEq)]
pub struct ServeArgs {
    pub listen: String,
    pub data: PathBuf,
    /// Beyond this many open connections the transport answers 503 and closes.
    pub max_connections: usize,
    pub default_daily_limit: Option<i64>,
    pub max_upload_mb: u64,
    pub log_level: log::LevelFilter,
    /// `ASTRBOT_ADMIN_PASSWORD` as set (possibly empty): the first start's admin password.
    pub admin_password: Option<Password>,
    /// The webhook retry delays (`ASTRBOT_WEBHOOK_BACKOFF_MS`, else the default schedule).
    pub webhook_backoff: Vec<std::time::Duration>,
}

/// A password read from the environment; `Debug` does not show it, so a printed command
/// line cannot leak it.
#[derive(PartialEq)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Password {
    /// The password, unless it is empty: an empty variable counts as not set.
    pub(super) fn given(&self) -> Option<&str> {
        Some(self.0.as_str()).filter(|p| !p.is_empty())
    }
}

/// Why `serve` cannot listen on `addr`, with what to do about the usual causes.
fn bind_error(addr: &str, e: &io::Error) -> String {
    let hint = match e.kind() {
        // 6185 is AstrBot's own port: AstrBot itself may be running on this machine.
        io::ErrorKind::AddrInUse => {
            "; another program (AstrBot itself uses 6185) holds this port: \
             pass another one, e.g. --listen 127.0.0.1:6186, or --listen :0 for a free one"
        }
        io::ErrorKind::PermissionDenied => {
            "; ports below 1024 need privileges: pass --listen with a higher port"
        }
        io::ErrorKind::AddrNotAvailable => "; this machine has no such address: try --listen 127.0.0.1:PORT",
        _ if e.raw_os_error().is_none() => {
            // Name resolution failed (getaddrinfo has no errno of its own).
            "; the host is not a known name or address: pass --listen PORT, :PORT, HOST:PORT or [IPv6]:PORT"
        }
        _ => "",
    };
    format!("cannot listen on {addr}: {e}{hint}")
}

/// Creates the administrator on the first start, from `ASTRBOT_ADMIN_PASSWORD` or a
/// generated password printed once.
fn ensure_admin(db: &Db, from_env: Option<&Password>) -> Result<(), String> {
    let mut conn = db.conn().map_err(|e| e.to_string())?;
    if db::admin_exists(&conn).map_err(|e| e.to_string())? {
        if from_env.is_some() {
            log::info!("ASTRBOT_ADMIN_PASSWORD is ignored: the administrator already exists");
        }
        return Ok(());
    }
    let from_env = from_env.and_then(Password::given);
    if let Some(p) = from_env {
        crate::auth::check_new_password(p).map_err(|e| format!("ASTRBOT_ADMIN_PASSWORD: {e}"))?;
    }
    let password = from_env.map(str::to_owned).unwrap_or_else(secrets::new_password);
    let phc = secrets::hash_password(&password)?;
    let created = db::write_tx(&mut conn, |tx| db::create_first_admin(tx, DEFAULT_ADMIN, &phc, now_micros()))
        .map_err(|e| e.to_string())?;
    if created {
        if from_env.is_some() {
            log::info!(
                "administrator \"{DEFAULT_ADMIN}\" created with the password from ASTRBOT_ADMIN_PASSWORD"
            );
        } else {
            // Printed once, outside the log filter, so it cannot be lost to --log-level.
            eprintln!(
                "admin password for \"{DEFAULT_ADMIN}\": {password}  (shown once; change it with `astrbot admin password`)"
            );
        }
    }
    Ok(())
}

fn init_logging(level: log::LevelFilter) {
    let config = simplelog::ConfigBuilder::new()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        // multipart logs every upload's boundary at info; our own lines say what was stored
        // or why a body was refused.
        .add_filter_ignore_str("multipart")
        .build();
    // stderr as before, and the in-memory buffer the operator's log routes read.
    let _ = simplelog::CombinedLogger::init(vec![
        simplelog::WriteLogger::new(level, config, io::stderr()),
        Box::new(crate::logbuf::BufferLogger::new(level)),
    ]);
}

pub(super) fn serve(args: ServeArgs) -> Result<(), String> {
    init_logging(args.log_level);
    crate::system::return_large_frees_to_the_os();
    // Everything that can refuse the start runs before the address is announced.
    let data = absolute(&args.data)?;
    prepare_data_dir(&data)?;
    probe_data_dir(&data)?;
    let _lock = lock_data_dir(&data)?;
    let (db, mac) = open_store(&data)?;
    probe_database(&db, &data)?;
    let settings = Settings {
        data_dir: data.clone(),
        default_daily_limit: args.default_daily_limit,
        max_upload_bytes: (args.max_upload_mb as usize).saturating_mul(1 << 20),
    };
    // The outbox has connections of its own: its writer and deliverer never wait for a
    // request's connection, nor a request for theirs.
    let outbox = Arc::new(Outbox::new(Db::open(&data)?, mac.clone(), args.webhook_backoff.clone()));
    let app = Arc::new(App::new(settings, db, mac, outbox)?);

    // The signal pipe is registered before anything listens, so no signal is missed.
    let (mut signal_rx, signal_tx) = std::os::unix::net::UnixStream::pair().map_err(|e| e.to_string())?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::low_level::pipe::register(sig, signal_tx.try_clone().map_err(|e| e.to_string())?)
            .map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
    }

    // Started before the listener, so a flood of connections cannot take the last thread.
    let maintainer = app.clone();
    std::thread::Builder::new()
        .name("maintain".into())
        .spawn(move || {
            let mut tick = 0u64;
            loop {
                std::thread::sleep(std::time::Duration::from_millis(250));
                tick += 1;
                if let Err(e) = maintainer.maintain(tick.is_multiple_of(4)) {
                    log::error!("background upkeep failed: {e}");
                }
                // Every ten seconds: what bursts allocated and freed goes back to the OS
                // (a trim of an idle heap takes microseconds).
                if tick.is_multiple_of(40) {
                    crate::system::release_free_memory();
                }
                // Every second: plugin processes idle past their time are stopped.
                if tick.is_multiple_of(4) {
                    maintainer.plugins.reap_idle();
                }
            }
        })
        .map_err(|e| e.to_string())?;

    // The webhook writer and deliverer, also before the listener and for the same reason;
    // pending events of an earlier run are delivered from now on.
    app.outbox.start()?;

    // A first-start password that will be refused is refused before anything listens.
    if let Some(p) = args.admin_password.as_ref().and_then(Password::given)
        && !app.db.conn().and_then(|c| db::admin_exists(&c)).map_err(|e| e.to_string())?
    {
        crate::auth::check_new_password(p).map_err(|e| format!("ASTRBOT_ADMIN_PASSWORD: {e}"))?;
    }
    let server = crate::server::Server::bind(app.clone(), &args.listen, args.max_connections)
        .map_err(|e| bind_error(&args.listen, &e))?;
    println!("listening on http://{}", server.local_addr());
    let _ = io::stdout().flush();
    // Requests wait in the queue until `run`: what is prepared from here on is ready before
    // the first one is served, without delaying the announcement.
    let _ = app.openapi_json.set(serde_json::to_vec(&crate::openapi::document()).unwrap_or_default());
    // The first start hashes the admin password (argon2, tens of milliseconds) after the
    // address is announced; requests arriving meanwhile wait in the queue.
    ensure_admin(&app.db, args.admin_password.as_ref())?;
    // The bundled guides are the built-in provider's knowledge; rebuilt at every start.
    match app
        .db
        .conn()
        .map_err(|e| e.to_string())
        .and_then(|mut c| crate::kb::index_bundled_docs(&mut c).map_err(|e| e.to_string()))
    {
        Ok((n, true)) => log::info!("knowledge base: {n} passages from the bundled docs"),
        Ok((n, false)) => log::info!("knowledge base: {n} passages from the bundled docs (unchanged)"),
        Err(e) => log::error!("cannot index the bundled docs: {e}"),
    }
    log::info!("astrbot {} serving data folder {}", env!("CARGO_PKG_VERSION"), data.display());
    // The configured IM bots start receiving once the server can answer.
    crate::platforms::manager::start_all(&app);
    // The active MCP servers connect in the background, each under its supervisor.
    crate::mcp::manager::start_all(&app);
    // What an install or upload cut short by a crash left behind goes first.
    for dir in [data.clone(), crate::plugins::root(&data)] {
        let n = crate::archive::remove_leftovers(&dir);
        if n > 0 {
            log::info!("removed {n} leftovers of interrupted installs in {}", dir.display());
        }
    }
    // The installed plugins are read (nothing runs until a command or tool is called).
    match app.db.conn() {
        Ok(conn) => app.plugins.load_all(&data, &conn),
        Err(e) => log::error!("cannot read the plugin states: {e}"),
    }
    // What start-up allocated and freed (the document, the index) goes back to the OS.
    crate::system::release_free_memory();

    server
        .run(|| {
            let mut byte = [0u8; 1];
            let _ = io::Read::read(&mut signal_rx, &mut byte);
            // Live log streams never end by themselves; the drain must not wait for them.
            crate::logbuf::close();
        })
        .map_err(|e| e.to_string())?;
    crate::platforms::manager::stop_all(&app);
    crate::mcp::manager::stop_all(&app);
    app.plugins.stop_all();
    app.flush_usage()?;
    // Streams still running when the server stops have no event yet; everything queued is
    // written, so it is delivered after the next start.
    app.outbox.flush();
    app.outbox.stop();
    if let Ok(conn) = app.db.conn() {
        let _ = db::checkpoint(&conn);
    }
    log::info!("stopped");
    Ok(())
}
