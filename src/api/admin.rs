//! The administrator's login (decision 4): `POST /api/auth/login` trades the username and
//! password for an admin token (random, stored as its MAC, seven days), `POST
//! /api/auth/logout` ends one. Failed logins are slowed and limited per client address.

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
/// Failed attempts allowed per address per window.
const MAX_FAILURES: usize = 5;
const WINDOW_MICROS: i64 = 60 * MICROS_PER_SEC;
pub const THROTTLED_MESSAGE: &str = "验证尝试过于频繁，系统可能正在遭受暴力破解";

/// Recent failed logins per client address. Time is an argument.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: HashMap<IpAddr, Vec<i64>>,
}

impl LoginThrottle {
    /// `Err(retry_after_secs)` if this address has used up its attempts.
    pub fn check(&mut self, ip: IpAddr, now: i64) -> Result<(), i64> {
        let Some(times) = self.failures.get_mut(&ip) else { return Ok(()) };
        times.retain(|t| now - t < WINDOW_MICROS);
        if times.len() >= MAX_FAILURES {
            let oldest = times.iter().min().copied().unwrap_or(now);
            return Err(((oldest + WINDOW_MICROS - now) / MICROS_PER_SEC).max(1));
        }
        Ok(())
    }

    /// Records a failure; returns how many failures the address has in the window.
    pub fn fail(&mut self, ip: IpAddr, now: i64) -> usize {
        if self.failures.len() > 10_000 {
            self.failures.retain(|_, t| t.iter().any(|t| now - t < WINDOW_MICROS));
        }
        let times = self.failures.entry(ip).or_default();
        times.retain(|t| now - t < WINDOW_MICROS);
        times.push(now);
        times.len()
    }

    pub fn succeed(&mut self, ip: IpAddr) {
        self.failures.remove(&ip);
    }
}

/// `POST /api/auth/login`
pub fn login(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let ip = ctx.req.remote.map(|a| a.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if let Err(retry_after) =
        ctx.app.login_throttle.lock().unwrap_or_else(|e| e.into_inner()).check(ip, ctx.now)
    {
        return Err(ApiError::TooManyRequests { message: THROTTLED_MESSAGE.into(), retry_after });
    }
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
        let failures = ctx.app.login_throttle.lock().unwrap_or_else(|e| e.into_inner()).fail(ip, ctx.now);
        log::warn!("failed admin login from {ip} ({failures} in the last minute)");
        // Slow down guessing: a growing pause before the answer.
        std::thread::sleep(Duration::from_millis(100 * failures.min(10) as u64));
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

/// `POST /api/auth/logout`: ends the bearer admin token, if it is one.
pub fn logout(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
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
    fn five_failures_a_minute_then_429_until_the_window_passes() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let mut t = LoginThrottle::default();
        for i in 0..5 {
            assert!(t.check(ip, i * MICROS_PER_SEC).is_ok());
            t.fail(ip, i * MICROS_PER_SEC);
        }
        assert_eq!(t.check(ip, 10 * MICROS_PER_SEC), Err(50));
        assert!(t.check(other, 10 * MICROS_PER_SEC).is_ok(), "per address");
        assert!(t.check(ip, 61 * MICROS_PER_SEC).is_ok(), "the window slides");
        t.succeed(ip);
        assert!(t.check(ip, 10 * MICROS_PER_SEC).is_ok());
    }

    #[test]
    fn dummy_hash_parses() {
        assert!(!secrets::verify_password("x", DUMMY_PHC));
        assert!(argon2::password_hash::phc::PasswordHash::new(DUMMY_PHC).is_ok());
    }
}
