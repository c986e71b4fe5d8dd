//! The login of the administrator, AstrBot's dashboard user: `POST /api/auth/login` trades
//! the username and password for an admin token (random, stored as its MAC, seven days),
//! `POST /api/auth/logout` ends one, `POST /api/v1/auth/password` changes the password and
//! signs out every admin token. Login attempts are limited per client address by
//! `auth::LoginThrottle`: each one is counted before its password is hashed, in the same
//! lock as the check, so a burst of concurrent guesses cannot all pass the check before
//! any of them is counted.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};

use super::opt_string;
use crate::app::Ctx;
use crate::auth;
use crate::db;
use crate::error::ApiError;
use crate::http::Response;
use crate::secrets;
use crate::timefmt::{MICROS_PER_DAY, iso};

pub const TOKEN_LIFETIME_MICROS: i64 = 7 * MICROS_PER_DAY;
pub const THROTTLED_MESSAGE: &str = "验证尝试过于频繁，系统可能正在遭受暴力破解";

/// Counts a password attempt of the caller's address (login or password change), before
/// any hash is computed: 429 with AstrBot's message once the address is over its limit.
fn begin_attempt(ctx: &Ctx<'_, '_>) -> Result<(IpAddr, usize), ApiError> {
    let ip = ctx.req.remote.map(|a| a.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let attempts =
        ctx.app.login_throttle.lock().unwrap_or_else(|e| e.into_inner()).begin(ip, ctx.now).map_err(
            |retry_after| ApiError::TooManyRequests { message: THROTTLED_MESSAGE.into(), retry_after },
        )?;
    Ok((ip, attempts))
}

/// `POST /api/auth/login`
pub fn login(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let (ip, attempts) = begin_attempt(ctx)?;
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
    let token_hash = ctx.app.mac.mac(&token);
    db::write_tx(&mut *ctx.app.db.conn()?, |tx| {
        db::insert_admin_token(tx, &token_hash, &username, ctx.now, expires_at)
    })?;
    log::info!("admin {username} logged in from {ip}");
    Ok(Response::ok(json!({"token": token, "username": username, "expires_at": iso(expires_at)})))
}

/// `POST /api/auth/logout`: ends the bearer admin token (or the cookie's), if it is one.
pub fn logout(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    if matches!(auth::extract_dashboard_credential(ctx.req), auth::Credential::Cookie(_)) {
        auth::refuse_cross_site_cookie(ctx.req)?;
    }
    if let Some(token) = auth::extract_dashboard_token(ctx.req) {
        db::write_tx(&mut *ctx.app.db.conn()?, |tx| db::delete_admin_token(tx, &ctx.app.mac.mac(&token)))?;
    }
    Ok(Response::ok(Value::Null))
}

/// `POST /api/v1/auth/password` (admin token): checks `current_password` (throttled per
/// client address like the login), applies the password rule to `new_password`, stores
/// its hash and signs out every admin token of the administrator, this one included.
pub fn change_password(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let auth::Identity::Admin(username) = ctx.caller()?.clone() else {
        return Err(ApiError::Forbidden("Only the admin token may change the admin password".into()));
    };
    let (ip, attempts) = begin_attempt(ctx)?;
    let body = ctx.req.json_object()?;
    let current = opt_string(body, "current_password")?
        .ok_or_else(|| ApiError::bad_request("Missing key: current_password"))?;
    let new = opt_string(body, "new_password")?
        .ok_or_else(|| ApiError::bad_request("Missing key: new_password"))?;
    let stored = db::admin_password_hash(&*ctx.app.db.conn()?, &username)?;
    let ok = stored.as_deref().is_some_and(|phc| secrets::verify_password(&current, phc));
    if !ok {
        log::warn!("failed admin password change from {ip} ({attempts} in the last minute)");
        std::thread::sleep(Duration::from_millis(100 * attempts.min(10) as u64));
        return Err(ApiError::bad_request("current_password is incorrect; the password was not changed"));
    }
    ctx.app.login_throttle.lock().unwrap_or_else(|e| e.into_inner()).succeed(ip);
    auth::check_new_password(&new).map_err(|e| ApiError::bad_request(format!("new_password: {e}")))?;
    let phc = secrets::hash_password(&new).map_err(ApiError::internal)?;
    db::write_tx(&mut *ctx.app.db.conn()?, |tx| db::set_admin_password(tx, &username, &phc, ctx.now))?;
    log::info!(
        "admin {username} changed the password from {ip}; every admin token of {username} is signed out"
    );
    Ok(Response::ok(json!({"username": username, "signed_out": true})))
}

/// A valid argon2id hash of a random string, verified against for unknown usernames.
const DUMMY_PHC: &str =
    "$argon2id$v=19$m=7168,t=5,p=1$rSlCxB6oxT829cVn50PI7w$tqJnDEgqcNpJNPzBegi/KV9ZtjFFPYaVLvq9GEJRgCk";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_hash_parses() {
        assert!(!secrets::verify_password("x", DUMMY_PHC));
        assert!(argon2::password_hash::phc::PasswordHash::new(DUMMY_PHC).is_ok());
    }
}
