//! The guides bundled into the binary (`static/docs/*.md`): what `/docs/{page}` renders
//! (`api::meta`) and what the built-in provider answers from (`kb`, collection `docs`).
//! Both read the one list here, so a new guide is served and searchable from one line.

/// The bundled guides: slug and Markdown source, in reading order.
pub const GUIDES: &[(&str, &str)] = &[
    ("quickstart", include_str!("../static/docs/quickstart.md")),
    ("keys", include_str!("../static/docs/keys.md")),
    ("quotas", include_str!("../static/docs/quotas.md")),
    ("providers", include_str!("../static/docs/providers.md")),
    ("chat", include_str!("../static/docs/chat.md")),
    ("websocket", include_str!("../static/docs/websocket.md")),
    ("files", include_str!("../static/docs/files.md")),
    ("knowledge", include_str!("../static/docs/knowledge.md")),
    ("tools", include_str!("../static/docs/tools.md")),
    ("skills", include_str!("../static/docs/skills.md")),
    ("plugins", include_str!("../static/docs/plugins.md")),
    ("website-chatbots", include_str!("../static/docs/website-chatbots.md")),
    ("telegram", include_str!("../static/docs/telegram.md")),
    ("onebot", include_str!("../static/docs/onebot.md")),
    ("configuration", include_str!("../static/docs/configuration.md")),
    ("systemd", include_str!("../static/docs/systemd.md")),
    ("operator", include_str!("../static/docs/operator.md")),
];
