//! IM platforms: configured bots (AstrBot's "platforms") that receive messages from their
//! users, answer them through the same chat run as `POST /api/v1/chat`, and take proactive
//! messages from `POST /api/v1/im/message`.
//!
//! The layer sits beside `chat` (it uses `chat`, `db`, `config` and `app`, never `api`):
//!
//! - [`types`]: the bot types (`webchat`, `telegram`, `aiocqhttp`), their fields, defaults
//!   and JSON schemas, and the per-type validation a bot passes before it is stored;
//! - [`adapter`]: the [`Adapter`] trait, the messages both ways, the [`Hub`], a bot's state;
//! - [`registry`]: the running bots by id ([`registry::Platforms`] in `App`);
//! - [`manager`]: the adapters of the stored bots, started,
//!   restarted and stopped as bots are created, changed, enabled or deleted; a supervisor
//!   thread per bot restarts a crashed adapter with backoff and records its state;
//! - [`inbound`]: AstrBot's pipeline for a received message: UMO, waking, whitelist,
//!   admins, rate limit, then the chat run, then the reply's decoration and its sending;
//! - [`telegram`]: the Telegram Bot API adapter (long polling, ureq);
//! - [`onebot`]: the OneBot v11 reverse WebSocket adapter (tungstenite, its own port).
//!
//! An adapter converts what its platform sends into an [`Inbound`] and hands it to
//! [`Hub::deliver`]; it sends what the pipeline or a proactive message gives it as
//! [`OutPart`]s to a [`Target`]. Adapters never see the chat layer, and the pipeline never
//! sees a platform's wire format.

pub mod adapter;
pub mod inbound;
pub mod manager;
pub mod onebot;
pub mod registry;
pub mod telegram;
pub mod types;

pub use adapter::{Adapter, Hub, Inbound, Media, OutPart, RunError, SendError, Target};
