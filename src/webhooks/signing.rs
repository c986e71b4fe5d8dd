//! What identifies and authenticates an event: its `webhook-id`, the key's nonce and the
//! signing secret derived from it, and the Standard Webhooks signature. Used by the
//! HTTP side (ids, nonces, secrets shown once) and the deliverer (signatures).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use ring::hmac;

use crate::secrets::{self, MacKey};

/// A new `webhook-id`: `msg_`, 24 hex digits of randomness drawn once per process, and a
/// 12-digit counter. Unique across restarts by the random part, and cheap (no system call)
/// for every request by the counter; the ids of one process also sort in creation order,
/// which keeps the table's unique index appending.
pub fn new_event_id() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix =
        PREFIX.get_or_init(|| secrets::random_bytes::<12>().iter().map(|b| format!("{b:02x}")).collect());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("msg_{prefix}{n:012x}")
}

/// A new `api_keys.webhook_nonce`: 128 random bits, base64url. Replacing it rotates the
/// key's secret.
pub fn new_nonce() -> String {
    secrets::base64url(&secrets::random_bytes::<16>())
}

/// A key's signing secret, `whsec_` and the standard (padded) base64 of 32 bytes. Derived,
/// never stored: the database alone does not let anyone sign events.
pub fn webhook_secret(mac: &MacKey, key_id: &str, nonce: &str) -> String {
    let bytes = mac.mac(&format!("webhook-secret:{key_id}:{nonce}"));
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The `webhook-signature` of Standard Webhooks: `v1,` and the base64 HMAC-SHA256 of
/// `{msg_id}.{timestamp}.{body}`, keyed by the base64-decoded part of the secret after
/// `whsec_`. A secret that is not base64 (never one of ours) is used as its raw bytes
/// rather than refused: signing cannot fail, and such a signature simply does not verify.
pub fn sign(secret: &str, msg_id: &str, timestamp_secs: i64, body: &str) -> String {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key_bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_else(|_| encoded.as_bytes().to_vec());
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
    let mut mac = hmac::Context::with_key(&key);
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.sign().as_ref()))
}
