//! The administrator's login (decision 4): `POST /api/auth/login` trades the username and
//! password for an admin token (random, stored as its MAC, seven days), `POST
//! /api/auth/logout` ends one. Login attempts are limited per client address: each one is
//! counted before its password is hashed, in the same lock as the check, so a burst of
//! concurrent guesses cannot all pass the check before any of them is counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Ctx, opt_string};
use crate::auth;
use crate::db;
use crate::error::ApiError;
use crate::http::Response;
use crate::secrets;
use crate::timefmt::{MICROS_PER_DAY, MICROS_PER_SEC, iso};

pub const DEFAULT_ADMIN: &str = "astrbot";
pub const TOKEN_LIFETIME_MICROS: i64 = 7 * MICROS_PER_DAY;
/// Attempts allowed per address per window; a success clears the address.
const MAX_ATTEMPTS: usize = 5;
const WINDOW_MICROS: i64 = 60 * MICROS_PER_SEC;
pub const THROTTLED_MESSAGE: &str = "验证尝试过于频繁，系统可能正在遭受暴力破解";

/// Recent login attempts per client address, counted when they start. Time is an argument.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    attempts: HashMap<IpAddr, Vec<i64>>,
}

impl LoginThrottle {
    /// Checks and counts an attempt in one step: `Ok(n)` with the attempts of this address
    /// in the window, this one included, or `Err(retry_after_secs)` when it has used them
    /// up (and then nothing is counted). Attempts still running count, so no more than
    /// [`MAX_ATTEMPTS`] hashes a minute run for one address however many arrive at once.
    pub fn begin(&mut self, ip: IpAddr, now: i64) -> Result<usize, i64> {
        if self.attempts.len() > 10_000 {
            self.attempts.retain(|_, t| t.iter().any(|t| now - t < WINDOW_MICROS));
        }
        let times = self.attempts.entry(ip).or_default();
        times.retain(|t| now - t < WINDOW_MICROS);
        if times.len() >= MAX_ATTEMPTS {
            let oldest = times.iter().min().copied().unwrap_or(now);
            return Err(((oldest + WINDOW_MICROS - now) / MICROS_PER_SEC).max(1));
        }
        times.push(now);
        Ok(times.len())
    }

    /// A right password: the address starts afresh (its failed attempts were the admin's).
    pub fn succeed(&mut self, ip: IpAddr) {
        self.attempts.remove(&ip);
    }
}

/// `POST /api/auth/login`
pub fn login(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let ip = ctx.req.remote.map(|a| a.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let attempts =
        ctx.app.login_throttle.lock().unwrap_or_else(|e| e.into_inner()).begin(ip, ctx.now).map_err(
            |retry_after| ApiError::TooManyRequests { message: THROTTLED_MESSAGE.into(), retry_after },
        )?;
    let body = ctx.req.json_object()?;
    let username = opt_string(body, "username")?.unwrap_or_default();
    let password = opt_string(body, "password")?.unwrap_or_default();
    let stored = db::admin_password_hash(&*ctx.app.db.conn()?, username.trim())?;
    // Unknown users cost a hash too, so timing does not tell which usernames exist.
    let ok = match &stored {
        Some(phc) => secrets::verify_password(&password, phc),
        None => {
            let _ = secrets::verify_password(&password, DUMMY_PHC);
            false
        }
    };
    if !ok {
        // The attempt was counted by `begin`; it stays counted.
        log::warn!("failed admin login from {ip} ({attempts} in the last minute)");
        // Slow down guessing: a growing pause before the answer.
        std::thread::sleep(Duration::from_millis(100 * attempts.min(10) as u64));
        return Err(ApiError::Unauthorized("Invalid username or password".into()));
    }
    ctx.app.login_throttle.lock().unwrap_or_else(|e| e.into_inner()).succeed(ip);
    let token = secrets::new_admin_token();
    let expires_at = ctx.now + TOKEN_LIFETIME_MICROS;
    let username = username.trim().to_owned();
    db::insert_admin_token(&*ctx.app.db.conn()?, &ctx.app.mac.mac(&token), &username, ctx.now, expires_at)?;
    log::info!("admin {username} logged in from {ip}");
    Ok(Response::ok(json!({"token": token, "username": username, "expires_at": iso(expires_at)})))
}

/// `POST /api/auth/logout`: ends the bearer admin token (or the cookie's), if it is one.
pub fn logout(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    if matches!(auth::extract_dashboard_credential(ctx.req), auth::Credential::Cookie(_)) {
        crate::app::refuse_cross_site_cookie(ctx.req)?;
    }
    if let Some(token) = auth::extract_dashboard_token(ctx.req) {
        db::delete_admin_token(&*ctx.app.db.conn()?, &ctx.app.mac.mac(&token))?;
    }
    Ok(Response::ok(Value::Null))
}

/// A valid argon2id hash of a random string, verified against for unknown usernames.
const DUMMY_PHC: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vh4oXxRIQUr6fkRvSvdGgnXRp5Vs/kDEW8x3CsE6h/I";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_attempts_a_minute_then_429_until_the_window_passes() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let mut t = LoginThrottle::default();
        for i in 0..5 {
            assert_eq!(t.begin(ip, i * MICROS_PER_SEC), Ok(i as usize + 1));
        }
        assert_eq!(t.begin(ip, 10 * MICROS_PER_SEC), Err(50));
        assert_eq!(t.begin(other, 10 * MICROS_PER_SEC), Ok(1), "per address");
        assert_eq!(t.begin(ip, 60 * MICROS_PER_SEC), Ok(5), "the window slides: the first has left");
        assert_eq!(t.begin(ip, 60 * MICROS_PER_SEC), Err(1));
        t.succeed(ip);
        assert_eq!(t.begin(ip, 61 * MICROS_PER_SEC), Ok(1), "a success clears the address");
    }

    #[test]
    fn login_throttle_race_attempts_count_before_they_finish() {
        // The bug: 500 concurrent wrong logins all passed the check, because each was
        // counted only after its hash. Attempts still running must count: with none
        // finished, the sixth at the same instant is refused.
        let ip: IpAddr = "10.0.0.3".parse().unwrap();
        let mut t = LoginThrottle::default();
        let now = 1_000 * MICROS_PER_SEC;
        let verdicts: Vec<_> = (0..40).map(|_| t.begin(ip, now)).collect();
        assert_eq!(verdicts.iter().filter(|v| v.is_ok()).count(), 5);
        assert!(verdicts[5..].iter().all(|v| *v == Err(60)));
    }

    #[test]
    fn dummy_hash_parses() {
        assert!(!secrets::verify_password("x", DUMMY_PHC));
        assert!(argon2::password_hash::phc::PasswordHash::new(DUMMY_PHC).is_ok());
    }
}
