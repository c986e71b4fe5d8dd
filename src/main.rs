//! astrbot: AstrBot's developer HTTP API as a minimal synchronous single binary.
//!
//! `main` parses the command line and runs it; everything else lives in the modules below.
//! See ARCHITECTURE.md for the map.

mod api;
mod app;
mod archive;
mod attachments;
mod auth;
mod chat;
mod cli;
mod compress;
mod config;
mod db;
mod docs;
mod error;
mod http;
mod kb;
mod keys;
mod logbuf;
mod markdown;
mod mcp;
mod mirror;
mod openapi;
mod pipeline;
mod platforms;
mod plugins;
mod quota;
mod routes;
mod secrets;
mod server;
mod skills;
mod sse;
mod system;
mod timefmt;
mod uploads;
mod webhooks;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = cli::parse(&argv, &|k| std::env::var(k).ok()).and_then(cli::run);
    if let Err(message) = result {
        eprintln!("astrbot: {message}");
        std::process::exit(2);
    }
}
