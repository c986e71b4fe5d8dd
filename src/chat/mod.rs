//! The chat layer: everything that happens between a validated chat message and its
//! stored reply, free of HTTP. `api::chat` checks a request in AstrBot's order and hands
//! over a [`run::UserMessage`]; [`run`] stores it, decides the answer (a command, the
//! built-in knowledge provider, or an LLM) and emits AstrBot's events; `api::im` hands
//! over a proactive message for the live streams of a conversation.
//!
//! This is where the next floors plug in: tools and the agent loop around [`adapters`],
//! plugins' commands beside [`commands`], and platform adapters as further senders and
//! receivers of the same [`events`] next to webchat's [`streams`]. The layer uses `db`,
//! `config`, `kb` and `app::App`, never `api`: a platform adapter must be able to start a
//! run without an HTTP request.
//!
//! - [`run`]: the run itself (`run`, `answer`, `RunSlot`, `Events`) and the user message
//!   it starts from;
//! - [`commands`]: `/help`, `/sid`, `/reset`, `/new`, `/provider`, `/model`, `/persona`;
//! - [`context`]: the prompt a model sees (persona, history, attachments);
//! - [`provider`]: the typed provider settings, parsed once from the stored documents;
//! - [`adapters`]: the OpenAI-compatible and Anthropic adapters, retries and key rotation;
//! - [`runs`]: each run's event log, which the SSE and WebSocket chats and the resume
//!   route read;
//! - [`streams`]: the live streams of running chats, each registered by a guard;
//! - [`tools`]: the tools an agent may call (built-in and MCP) and how a call runs;
//! - [`events`]: every SSE event the chat and proactive delivery send;
//! - [`locale`]: the language of the chat's built-in texts.

pub mod adapters;
pub mod commands;
pub mod context;
pub mod events;
pub mod locale;
pub mod provider;
pub mod run;
pub mod runs;
pub mod streams;
pub mod tools;
