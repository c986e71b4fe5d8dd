//! (being written) The inbound pipeline.

use std::sync::Arc;

use serde_json::Value;

use super::{Adapter, Inbound};
use crate::app::App;

pub fn dispatch(_app: &Arc<App>, bot_id: &str, _config: &Value, _adapter: &Arc<dyn Adapter>, msg: Inbound) {
    log::info!("bot {bot_id}: message {} received (pipeline not built yet)", msg.message_id);
}
