//! Integration tests: the real binary, a fresh data folder each, spoken to over HTTP.

mod admin;
mod auth;
mod chat;
mod configs;
mod crash;
mod data_abuse;
mod docs;
mod errors;
mod fake_llm;
mod files;
mod hardening;
mod im;
mod kb;
mod keys;
mod layers;
mod lifecycle;
mod personas;
mod proactive;
mod providers;
mod quota;
mod secrets;
mod startup;
mod support;
mod transport;
