//! AstrBot's configuration documents, split by job: the default config and the documents
//! merged over it (`defaults`, `documents`), validation with AstrBot's messages
//! (`validate`), secret masking and restore (`masking`, with `target`: where a key goes,
//! and `refs`: `$NAME` references), providers merged with their sources (`providers`), and
//! the one place that answers "which settings apply to this UMO" ([`effective()`]), and the
//! 4.27 and 4.29 layouts of the agent's settings over one stored document (`layouts`).
//!
//! Everything is stored in SQLite (`db::resources`); the shapes a client sees are
//! AstrBot's. The default profile is the system config: its stored document is merged over
//! [`default_config`], and its `provider_sources`, `provider` and `platform` sections are
//! mirrored read-only from their tables. Secrets never leave the server in clear: keys are
//! masked to their first 3 and last 4 characters, a masked value sent back in a PUT keeps
//! what is stored only while the secret still goes to the same target (scheme, host, port
//! and proxy), and `$NAME` key references are limited to `*_API_KEY` names and those listed
//! in `ASTRBOT_SECRET_ENV`, so that no request can send a stored key to a server of its
//! choosing or read an arbitrary environment variable. Callers use the paths re-exported
//! here (`config::redact`, `config::effective`, ...), not the submodules.

mod defaults;
mod documents;
mod effective;
mod layouts;
mod masking;
mod providers;
mod refs;
mod target;
mod validate;

pub use defaults::{
    BUILTIN_PROVIDER, DEFAULT_PERSONA_ID, DEFAULT_PROFILE, READ_ONLY_SECTIONS, default_config,
};
pub use documents::{BotLookup, all_admin_ids, find_bot, profile_config, profile_defaults, system_config};
pub use effective::{Effective, ProviderChoice, SessionChoice, effective};
pub use layouts::{apply_update as apply_layouts, check_local_permissions, is_429_shaped};
pub use masking::{mask, redact, restore_secrets};
pub use providers::{check_inheriting_providers, merged_provider, provider_type_of};
pub use refs::{check_secret_refs, process_env, refused_ref, secret_ref, secret_ref_allowed};
pub use target::{same_url_endpoint, target_change};
pub use validate::{validate, validate_new_profile, validate_source, validate_typed};
