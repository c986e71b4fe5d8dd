//! Cutting a long reply into messages Telegram accepts (`text` is at most 4096 characters).
//!
//! As AstrBot does, a chunk ends at the last paragraph break (`\n\n`) inside the limit, else
//! the last line break, else the last sentence end (`.!?。！？`), else the last whitespace,
//! else it is cut hard; the next chunk starts with its leading whitespace removed. Unlike
//! AstrBot (which counts code points), length is counted in UTF-16 code units, the unit of
//! Telegram's entity offsets and the conservative reading of its limit, and a hard cut never
//! falls inside a character.

/// Telegram's limit of a message's text.
pub const MAX_TEXT: usize = 4096;

/// The length of `s` in UTF-16 code units.
pub fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// The byte index where the longest prefix of `s` of at most `units` UTF-16 units ends.
fn prefix_end(s: &str, units: usize) -> usize {
    let mut used = 0usize;
    for (i, c) in s.char_indices() {
        used += c.len_utf16();
        if used > units {
            return i;
        }
    }
    s.len()
}

/// The byte index after the last cut point of `head`, by the preference order above; 0
/// when there is none.
fn cut_point(head: &str) -> usize {
    if let Some(i) = head.rfind("\n\n") {
        return i + 2;
    }
    if let Some(i) = head.rfind('\n') {
        return i + 1;
    }
    let after = |(i, c): (usize, char)| i + c.len_utf8();
    if let Some(end) = head.char_indices().rev().find(|(_, c)| ".!?。！？".contains(*c)).map(after) {
        return end;
    }
    head.char_indices().rev().find(|(_, c)| c.is_whitespace()).map(after).unwrap_or(0)
}

/// Splits `text` into chunks of at most `max` UTF-16 units (`max` ≥ 2, so that any
/// character fits). Chunks that would be only whitespace are left out.
pub fn split(text: &str, max: usize) -> Vec<String> {
    let max = max.max(2);
    let mut chunks = Vec::new();
    let mut rest = text;
    while !rest.trim().is_empty() {
        if utf16_len(rest) <= max {
            chunks.push(rest.trim_end().to_owned());
            break;
        }
        let limit = prefix_end(rest, max);
        let mut cut = cut_point(&rest[..limit]);
        if rest[..cut].trim().is_empty() {
            cut = limit;
        }
        chunks.push(rest[..cut].trim_end().to_owned());
        rest = rest[cut..].trim_start();
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_chunk_and_empty_text_none() {
        assert_eq!(split("hello", 10), vec!["hello"]);
        assert!(split("  \n ", 10).is_empty());
        assert!(split("", 10).is_empty());
    }

    #[test]
    fn cuts_prefer_paragraphs_then_lines_then_sentences_then_spaces() {
        // The first kind found wins, at its last place, even before a later cut of another kind.
        assert_eq!(split("aaa\n\nbbb\nccc ddd", 12), vec!["aaa", "bbb\nccc ddd"]);
        assert_eq!(split("aaa\nbbb. ccc ddd", 12), vec!["aaa", "bbb. ccc ddd"]);
        assert_eq!(split("aaa bbb. ccc ddd", 12), vec!["aaa bbb.", "ccc ddd"]);
        assert_eq!(split("aaa bbb ccc ddd", 12), vec!["aaa bbb ccc", "ddd"]);
        assert_eq!(split("好的。很好的东西", 4), vec!["好的。", "很好的东", "西"]);
        assert_eq!(split("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
    }

    #[test]
    fn length_is_counted_in_utf16_units_and_never_cuts_inside_a_character() {
        // Each 😀 is 2 UTF-16 units (4 bytes).
        let emoji = "😀".repeat(5);
        let chunks = split(&emoji, 5);
        assert_eq!(chunks, vec!["😀😀", "😀😀", "😀"]);
        for c in &chunks {
            assert!(utf16_len(c) <= 5);
        }
        assert_eq!(utf16_len("a😀é"), 4);
    }

    #[test]
    fn a_long_reply_is_three_messages_within_the_limit() {
        let para = "word ".repeat(599) + "end.";
        let text = [para.as_str(); 3].join("\n\n");
        assert!(utf16_len(&text) > 9000);
        let chunks = split(&text, MAX_TEXT);
        assert_eq!(chunks.len(), 3, "{:?}", chunks.iter().map(|c| c.len()).collect::<Vec<_>>());
        for c in &chunks {
            assert!(utf16_len(c) <= MAX_TEXT);
            assert!(c.ends_with("end."));
        }
        assert_eq!(chunks.concat().len() + 4, text.len(), "only the paragraph breaks are dropped");
    }
}
