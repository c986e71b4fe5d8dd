//! The IM routes (reference sections 4 and 8). For now the bot listing: the ids of the
//! configured bots, in configuration order; the built-in `webchat` platform is not listed.

use serde_json::json;

use super::Ctx;
use crate::db;
use crate::error::ApiError;
use crate::http::Response;

/// `GET /api/v1/im/bots`
pub fn list_bots(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let conn = ctx.app.db.conn()?;
    let mut ids = db::bot_ids(&conn)?;
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    Ok(Response::ok(json!({ "bot_ids": ids })))
}
