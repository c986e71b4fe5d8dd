//! The defaults: AstrBot's default config document (`DEFAULT_CONFIG`, for the keys this
//! appliance uses) and the built-in names that apply when nothing is configured (the
//! default profile, the default persona, the built-in provider).
//!
//! Every profile is stored as the part a client changed and read merged over
//! [`default_config`] (`documents`); validation (`validate`) judges each known key against
//! the type of its default here, so a key added here is both completed and checked.

use serde_json::{Value, json};

/// The profile that applies when a UMO has no route: the system config.
pub const DEFAULT_PROFILE: &str = "default";
/// The built-in persona that is not in the table (AstrBot's `DEFAULT_PERSONALITY`).
pub const DEFAULT_PERSONA_ID: &str = "default";
pub const DEFAULT_PERSONA_PROMPT: &str = "You are a helpful and friendly assistant.";
/// The provider that answers from the knowledge base when no LLM is configured.
pub const BUILTIN_PROVIDER: &str = "builtin";

/// AstrBot's `DEFAULT_CONFIG`, for the keys this appliance uses, in 4.27's layout (4.29's
/// `agent_runner` is a view of the `provider_settings` keys, see `layouts`).
pub fn default_config() -> Value {
    json!({
        "config_version": 2,
        "platform_settings": {
            "unique_session": false,
            "rate_limit": {"time": 60, "count": 30, "strategy": "stall"},
            "reply_prefix": "",
            "forward_threshold": 1500,
            "enable_id_white_list": true,
            "id_whitelist": [],
            "id_whitelist_log": true,
            "wl_ignore_admin_on_group": true,
            "wl_ignore_admin_on_friend": true,
            "reply_with_mention": false,
            "reply_with_quote": false,
            "path_mapping": [],
            "segmented_reply": {
                "enable": false,
                "only_llm_result": true,
                "interval_method": "random",
                "interval": "1.5,3.5",
                "log_base": 2.6,
                "words_count_threshold": 150,
                "split_mode": "regex",
                "regex": ".*?[。？！~…]+|.+$",
                "split_words": ["。", "？", "！", "~", "…"],
                "content_cleanup_rule": ""
            },
            "no_permission_reply": true,
            "empty_mention_waiting": true,
            "empty_mention_waiting_need_reply": true,
            "friend_message_needs_wake_prefix": false,
            "ignore_bot_self_message": false,
            "ignore_at_all": false
        },
        "provider_sources": [],
        "provider": [],
        "provider_settings": {
            "enable": true,
            "default_provider_id": "",
            "fallback_chat_models": [],
            "wake_prefix": "",
            "web_search": false,
            "identifier": false,
            "datetime_system_prompt": true,
            "default_personality": "default",
            "persona_pool": ["*"],
            "provider_pool": ["*"],
            "prompt_prefix": "{{prompt}}",
            "max_context_length": -1,
            "dequeue_context_length": 1,
            "request_max_retries": 3,
            "streaming_response": false,
            "show_tool_use_status": false,
            "agent_runner_type": "local",
            "max_agent_step": 30,
            "tool_call_timeout": 120,
            "llm_safety_mode": true,
            "safety_mode_strategy": "system_prompt",
            "context_limit_reached_strategy": "llm_compress",
            "llm_compress_instruction": "",
            "llm_compress_keep_recent_ratio": 0.15,
            "llm_compress_provider_id": "",
            "fallback_max_context_tokens": 128000,
            "tool_schema_mode": "full",
            "sanitize_context_by_modalities": false
        },
        "provider_stt_settings": {"enable": false, "provider_id": ""},
        "provider_tts_settings": {"enable": false, "provider_id": ""},
        "wake_prefix": ["/"],
        "admins_id": ["astrbot"],
        "platform": [],
        "timezone": "Asia/Shanghai",
        "kb_names": [],
        "plugin_set": ["*"],
        "http_proxy": "",
        "no_proxy": ["localhost", "127.0.0.1", "::1"],
        "log_level": "INFO",
        "t2i": false,
        "callback_api_base": "",
        "disable_metrics": false
    })
}

/// Sections of the default profile that only their own routes may change.
pub const READ_ONLY_SECTIONS: [&str; 3] = ["provider_sources", "provider", "platform"];
