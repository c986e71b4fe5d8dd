//! The language of the chat's built-in texts (AstrBot 4.29's `locale` on `POST /api/v1/chat`):
//! the error a run shows when its request to the model fails, in the four languages AstrBot
//! ships (`zh-CN`, `en-US`, `ru-RU`, `ja-JP`; any other value is `zh-CN`, as there).
//!
//! A request without `locale` keeps the text 4.27 sent (`LLM 响应错误: ...`), so clients that
//! match on it, written before `locale` existed, see what they always saw.

/// A chat's locale, parsed once from the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Locale {
    /// No `locale` in the request: AstrBot 4.27's texts.
    #[default]
    Legacy,
    ZhCn,
    EnUs,
    RuRu,
    JaJp,
}

impl Locale {
    /// The locale a client named; an unknown one falls back to `zh-CN`, as in AstrBot.
    pub fn parse(name: &str) -> Locale {
        match name.trim() {
            "en-US" => Locale::EnUs,
            "ru-RU" => Locale::RuRu,
            "ja-JP" => Locale::JaJp,
            _ => Locale::ZhCn,
        }
    }

    /// The reply when a request to the model failed with `detail` (AstrBot's
    /// `requestFailed`).
    pub fn request_failed(self, detail: &str) -> String {
        match self {
            Locale::Legacy => format!("LLM 响应错误: {detail}"),
            Locale::ZhCn => format!("LLM 请求失败：{detail}"),
            Locale::EnUs => format!("LLM request failed: {detail}"),
            Locale::RuRu => format!("Ошибка запроса к LLM: {detail}"),
            Locale::JaJp => format!("LLM リクエストに失敗しました：{detail}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_locale_has_its_text_and_unknown_ones_fall_back_to_chinese() {
        assert_eq!(Locale::default().request_failed("x"), "LLM 响应错误: x");
        assert_eq!(Locale::parse("en-US").request_failed("x"), "LLM request failed: x");
        assert_eq!(Locale::parse("ru-RU").request_failed("x"), "Ошибка запроса к LLM: x");
        assert_eq!(Locale::parse("ja-JP").request_failed("x"), "LLM リクエストに失敗しました：x");
        assert_eq!(Locale::parse("zh-CN").request_failed("x"), "LLM 请求失败：x");
        assert_eq!(Locale::parse("fr-FR"), Locale::ZhCn);
        assert_eq!(Locale::parse(""), Locale::ZhCn);
    }
}
