//! (being written) The OneBot adapter.

use serde_json::{Value, json};

use super::{Adapter, Hub, OutPart, RunError, SendError, Target};

pub struct OneBot {
    bot_id: String,
}

impl OneBot {
    pub fn new(bot_id: &str, _config: &Value) -> Result<OneBot, String> {
        Ok(OneBot { bot_id: bot_id.to_owned() })
    }
}

impl Adapter for OneBot {
    fn run(&self, _hub: &Hub) -> Result<(), RunError> {
        Err(RunError::Fatal(format!("bot {}: this adapter is not built yet", self.bot_id)))
    }

    fn send(&self, _target: &Target, _parts: &[OutPart]) -> Result<(), SendError> {
        Err(SendError::Failed("this adapter is not built yet".into()))
    }

    fn test(&self) -> Value {
        json!({"status": "error", "message": "this adapter is not built yet"})
    }

    fn stop(&self) {}
}
