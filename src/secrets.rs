//! Secrets: randomness, API keys, admin tokens, the MAC that stores them, admin passwords.
//!
//! API keys and admin tokens carry 256 random bits, so a fast keyed BLAKE2b-256 MAC is the
//! right way to store them (NIST SP 800-63B; a slow KDF per request would cap throughput):
//! the database never holds a key, only its MAC under a secret that lives in the data
//! folder (mode 0600). The admin's password is a human secret and gets argon2id with
//! OWASP's parameters instead, behind a small concurrency cap because each hash takes
//! 19 MiB.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Condvar, Mutex};

use base64::Engine as _;
use blake2::digest::{KeyInit, Mac};

pub const API_KEY_PREFIX: &str = "abk_";
pub const ADMIN_TOKEN_PREFIX: &str = "abt_";
/// `abk_` plus 43 URL-safe characters (32 random bytes).
pub const API_KEY_LEN: usize = 47;
pub const KEY_PREFIX_LEN: usize = 12;

type Blake2bMac256 = blake2::Blake2bMac<blake2::digest::consts::U32>;

/// Fills a buffer from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // getrandom(2) only fails when the kernel has no entropy source at all; there is no
    // safe way to go on without randomness, so this is the one place a failure is fatal.
    getrandom::fill(&mut buf).expect("the operating system has no random number source");
    buf
}

/// Unpadded base64url (the URL-safe alphabet of RFC 4648), as Python's
/// `secrets.token_urlsafe` writes it.
pub fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A new raw API key: `abk_` + 43 URL-safe characters.
pub fn new_api_key() -> String {
    format!("{API_KEY_PREFIX}{}", base64url(&random_bytes::<32>()))
}

/// A new raw admin token: `abt_` + 43 URL-safe characters.
pub fn new_admin_token() -> String {
    format!("{ADMIN_TOKEN_PREFIX}{}", base64url(&random_bytes::<32>()))
}

/// A readable generated password for the first start.
pub fn new_password() -> String {
    base64url(&random_bytes::<15>())
}

/// Whether a string has the shape of a key this appliance issues; anything else is
/// rejected before the MAC and the database are touched.
pub fn looks_like_api_key(raw: &str) -> bool {
    raw.len() == API_KEY_LEN
        && raw.starts_with(API_KEY_PREFIX)
        && raw.bytes().skip(4).all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The secret under which keys and tokens are stored.
#[derive(Clone)]
pub struct MacKey([u8; 32]);

impl MacKey {
    /// Reads `DIR/secret.key`, creating it (mode 0600, 32 random bytes) if it is absent.
    /// Creation uses `O_EXCL`, so a server and a CLI starting together agree on one secret.
    pub fn load_or_create(dir: &Path) -> io::Result<MacKey> {
        let path = dir.join("secret.key");
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(mut file) => {
                let key = random_bytes::<32>();
                file.write_all(&key)?;
                file.sync_all()?;
                Ok(MacKey(key))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let mut buf = Vec::new();
                // A racing creator may not have written yet; a short retry covers it.
                for _ in 0..50 {
                    buf.clear();
                    fs::File::open(&path)?.read_to_end(&mut buf)?;
                    if buf.len() == 32 {
                        let mut key = [0u8; 32];
                        key.copy_from_slice(&buf);
                        return Ok(MacKey(key));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a 32-byte secret", path.display()),
                ))
            }
            Err(e) => Err(e),
        }
    }

    #[cfg(test)]
    pub fn fixed(byte: u8) -> MacKey {
        MacKey([byte; 32])
    }

    /// Keyed BLAKE2b-256 of a key or token.
    pub fn mac(&self, data: &str) -> [u8; 32] {
        let mut mac =
            <Blake2bMac256 as KeyInit>::new_from_slice(&self.0).expect("BLAKE2b accepts a 32-byte key");
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// At most two argon2 hashes at a time: each allocates 19 MiB, and a Pi has little memory.
static HASH_SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(2), Condvar::new());

fn with_hash_slot<T>(f: impl FnOnce() -> T) -> T {
    let (lock, cvar) = &HASH_SLOTS;
    let mut free = lock.lock().unwrap_or_else(|e| e.into_inner());
    while *free == 0 {
        free = cvar.wait(free).unwrap_or_else(|e| e.into_inner());
    }
    *free -= 1;
    drop(free);
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            let (lock, cvar) = &HASH_SLOTS;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            cvar.notify_one();
        }
    }
    let _release = Release;
    f()
}

/// argon2id with OWASP's m=7 MiB, t=5, p=1: one of the five configurations OWASP lists as
/// equivalent (as strong as m=19 MiB, t=2, the crate's default), the one that needs least
/// memory, which a Pi and the server's peak resident size care about. Hashes stored with
/// other parameters still verify: a PHC string carries its own.
fn hasher() -> argon2::Argon2<'static> {
    let params = argon2::Params::new(7168, 5, 1, None).expect("OWASP's parameters are valid");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// An argon2id PHC string (m=7168 KiB, t=5, p=1) for a password.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::PasswordHasher;
    with_hash_slot(|| {
        hasher()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| format!("argon2 failed: {e}"))
    })
}

/// Whether `password` matches a stored PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::PasswordVerifier;
    let Ok(hash) = argon2::password_hash::phc::PasswordHash::new(phc) else {
        return false;
    };
    with_hash_slot(|| hasher().verify_password(password.as_bytes(), &hash).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_owasp_low_memory_parameters_and_old_hashes_verify() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{phc}");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        // A hash of the earlier default (m=19456, t=2) of the password "password".
        let old = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$K13EBUiG7JV+9ZxztmHFTdb7J0WQsnj2V8bZaqyPptE";
        assert!(verify_password("password", old));
        assert!(!verify_password("Password", old));
    }

    #[test]
    fn base64url_matches_rfc4648() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn keys_have_astrbot_shape() {
        let key = new_api_key();
        assert_eq!(key.len(), API_KEY_LEN);
        assert!(looks_like_api_key(&key));
        assert!(!looks_like_api_key(&key[..46]));
        assert!(!looks_like_api_key(&key.replace("abk_", "abx_")));
        assert_ne!(new_api_key(), key);
        assert_eq!(new_admin_token().len(), 47);
    }

    #[test]
    fn mac_depends_on_secret_and_input() {
        let a = MacKey::fixed(1);
        let b = MacKey::fixed(2);
        assert_eq!(a.mac("abk_x"), a.mac("abk_x"));
        assert_ne!(a.mac("abk_x"), a.mac("abk_y"));
        assert_ne!(a.mac("abk_x"), b.mac("abk_x"));
    }

    #[test]
    fn password_round_trip() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert!(!verify_password("x", "not a phc string"));
    }
}
