//! The knowledge base behind the built-in provider, which answers only from it and never
//! invents text: named collections of passages in SQLite FTS5 with the trigram tokenizer,
//! so English and Chinese are both searchable. Documents are split at their headings; each
//! passage keeps a title and a link. Collection `docs` holds the bundled guides of `docs`
//! and is rebuilt at every start.
//!
//! A question costs at most `MAX_QUESTION_CHARS` characters of reading and `MAX_TERMS`
//! terms per query, however long the message that carries it: a chat message may be a
//! megabyte, and the substring scan costs terms × passages.

use rusqlite::Connection;

use crate::db::kb::{self as store, Passage};
use crate::markdown;

/// Splits a Markdown document into passages at `#`, `##` and `###` headings. `base_url`
/// is the page's link; a section's link adds its heading's anchor.
pub fn split_markdown(source: &str, page_title: &str, base_url: &str) -> Vec<Passage> {
    let mut passages = Vec::new();
    let mut heading: Option<String> = None;
    let mut body = String::new();
    let mut in_code = false;
    let mut flush = |heading: &Option<String>, body: &mut String| {
        let text = body.trim();
        if !text.is_empty() {
            let (title, url) = match heading {
                Some(h) => (format!("{page_title} › {h}"), format!("{base_url}#{}", markdown::slug(h))),
                None => (page_title.to_owned(), base_url.to_owned()),
            };
            passages.push(Passage { title, url, body: text.to_owned() });
        }
        body.clear();
    };
    for line in source.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        let level = if in_code { 0 } else { line.chars().take_while(|c| *c == '#').count() };
        if (1..=3).contains(&level) && line[level..].starts_with(' ') {
            flush(&heading, &mut body);
            heading = if level == 1 { None } else { Some(line[level..].trim().to_owned()) };
            continue;
        }
        body.push_str(line);
        body.push('\n');
    }
    flush(&heading, &mut body);
    passages
}

/// Plain text of an HTML document split at `<h1>`–`<h3>`: tags dropped, entities of the
/// common kind decoded. Good enough for notes exported from a wiki.
pub fn split_html(source: &str, page_title: &str, base_url: &str) -> Vec<Passage> {
    let mut markdownish = String::new();
    let mut rest = source;
    while let Some(start) = rest.find('<') {
        markdownish.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else { break };
        let tag = rest[start + 1..start + end].trim().to_ascii_lowercase();
        match tag.as_str() {
            "h1" => markdownish.push_str("\n# "),
            "h2" => markdownish.push_str("\n## "),
            "h3" => markdownish.push_str("\n### "),
            t if t.starts_with("/h1")
                || t.starts_with("/h2")
                || t.starts_with("/h3")
                || t == "p"
                || t == "/p"
                || t.starts_with("br")
                || t == "li" =>
            {
                markdownish.push('\n')
            }
            _ => {}
        }
        rest = &rest[start + end + 1..];
    }
    markdownish.push_str(rest);
    let text = markdownish
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ");
    split_markdown(&text, page_title, base_url)
}

/// What a set of documents became: the passages, and the names of the files read and of
/// those skipped (not Markdown, text or HTML).
#[derive(Debug, Default)]
pub struct Split {
    pub passages: Vec<Passage>,
    pub used: Vec<String>,
    pub skipped: Vec<String>,
}

/// Whether a file name's extension is one the knowledge base reads.
pub fn readable(file_name: &str) -> bool {
    kind_of(file_name).is_some()
}

/// Whether a file name's extension is one the knowledge base reads, and if HTML.
fn kind_of(file_name: &str) -> Option<bool> {
    let ext = std::path::Path::new(file_name).extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "md" | "markdown" | "txt" | "text" => Some(false),
        "html" | "htm" => Some(true),
        _ => None,
    }
}

/// Splits documents (file name and text) for `collection`, what `astrbot kb add` and
/// `POST /api/v1/kb/collections/{name}/documents` both do. Each file is split at its
/// headings; its title is its first heading (an HTML file's `<h1>`), else its name. A
/// passage links to `kb:<collection>/<file>`, or with `base_url` to the page a website
/// serves for the file: `<base_url>/<file stem>` (`hours.md` is `https://example.com/hours`;
/// an HTML file keeps its name), so a website bot's sources point at its own pages.
pub fn split_documents<'a>(
    collection: &str,
    documents: impl IntoIterator<Item = (&'a str, &'a str)>,
    base_url: Option<&str>,
) -> Split {
    let mut split = Split::default();
    for (file_name, text) in documents {
        let Some(html) = kind_of(file_name) else {
            split.skipped.push(file_name.to_owned());
            continue;
        };
        let path = std::path::Path::new(file_name);
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("document");
        let html_title = text
            .split_once("<h1>")
            .and_then(|(_, rest)| rest.split_once("</h1>"))
            .map(|(t, _)| t.trim().to_owned())
            .filter(|t| !t.is_empty() && html);
        let title = html_title.unwrap_or_else(|| markdown::title(text).unwrap_or(name).to_owned());
        let base = base_url.map(|b| b.trim_end_matches('/'));
        let url = match base {
            Some(base) if html => format!("{base}/{file_name}"),
            Some(base) => format!("{base}/{name}"),
            None => format!("kb:{collection}/{file_name}"),
        };
        let found = if html { split_html(text, &title, &url) } else { split_markdown(text, &title, &url) };
        split.passages.extend(found);
        split.used.push(file_name.to_owned());
    }
    split
}

/// Replaces what `collection` holds with `passages`, in one transaction. `docs` holds the
/// bundled guides and is refused.
pub fn replace_collection(
    conn: &mut Connection,
    collection: &str,
    passages: &[Passage],
) -> Result<(), String> {
    if collection == "docs" {
        return Err("collection docs holds the bundled guides; choose another name".into());
    }
    crate::db::write_tx(conn, |tx| store::replace_collection(tx, collection, passages))
        .map_err(|e| e.to_string())
}

/// Removes a collection: `Ok(false)` if there is none of that name. `docs` is refused.
pub fn remove_collection(conn: &mut Connection, collection: &str) -> Result<bool, String> {
    if collection == "docs" {
        return Err("collection docs holds the bundled guides and is rebuilt at every start".into());
    }
    let exists = store::collections(conn).map_err(|e| e.to_string())?.iter().any(|(c, _)| c == collection);
    if exists {
        crate::db::write_tx(conn, |tx| store::replace_collection(tx, collection, &[]))
            .map_err(|e| e.to_string())?;
    }
    Ok(exists)
}

/// Characters of a question that are searched; the rest is not read.
pub const MAX_QUESTION_CHARS: usize = 2_000;
/// Terms in one query (trigram or substring), the first ones of the question.
pub const MAX_TERMS: usize = 32;

/// The searched part of a question: its first `MAX_QUESTION_CHARS` characters.
fn bounded(question: &str) -> &str {
    match question.char_indices().nth(MAX_QUESTION_CHARS) {
        Some((end, _)) => &question[..end],
        None => question,
    }
}

const STOPWORDS: &[&str] = &[
    "the", "and", "how", "can", "what", "does", "for", "with", "you", "are", "this", "that", "from", "have",
    "which", "when", "where", "why", "who", "your", "use", "using", "about", "into", "there", "their",
    "them", "should", "would", "could", "will", "not", "but", "all", "any", "our", "its", "was", "were",
    "been", "get", "please",
];

/// An FTS5 query for a question: its words of three or more characters (not stopwords),
/// and three-character windows of CJK text, quoted and OR-ed, at most `MAX_TERMS` of them,
/// from the first `MAX_QUESTION_CHARS` characters. `None` if nothing is left.
pub fn fts_query(question: &str) -> Option<String> {
    let question = bounded(question);
    let mut terms: Vec<String> = Vec::new();
    let mut push = |t: String| {
        if !terms.contains(&t) && terms.len() < MAX_TERMS {
            terms.push(t);
        }
    };
    let is_cjk = |c: char| {
        ('\u{4e00}'..='\u{9fff}').contains(&c)
            || ('\u{3040}'..='\u{30ff}').contains(&c)
            || ('\u{ac00}'..='\u{d7af}').contains(&c)
    };
    let mut word = String::new();
    let mut cjk: Vec<char> = Vec::new();
    let end_word = |word: &mut String, cjk: &mut Vec<char>, push: &mut dyn FnMut(String)| {
        let w = word.to_lowercase();
        if w.chars().count() >= 3 && !STOPWORDS.contains(&w.as_str()) {
            push(w);
        }
        word.clear();
        if cjk.len() >= 3 {
            for window in cjk.windows(3) {
                push(window.iter().collect());
            }
        }
        cjk.clear();
    };
    for c in question.chars() {
        if is_cjk(c) {
            if !word.is_empty() {
                end_word(&mut word, &mut Vec::new(), &mut push);
            }
            cjk.push(c);
        } else if c.is_alphanumeric() || c == '_' || c == '-' {
            if !cjk.is_empty() {
                end_word(&mut String::new(), &mut cjk, &mut push);
            }
            word.push(c);
        } else {
            end_word(&mut word, &mut cjk, &mut push);
        }
    }
    end_word(&mut word, &mut cjk, &mut push);
    let terms: Vec<String> = terms.into_iter().filter(|t| t.chars().count() >= 3).collect();
    if terms.is_empty() {
        return None;
    }
    Some(terms.iter().map(|t| format!("\"{}\"", t.replace('"', "\"\""))).collect::<Vec<_>>().join(" OR "))
}

/// Two-character CJK words of a question (too short for the trigram index), each once, at
/// most `MAX_TERMS` of them, from the first `MAX_QUESTION_CHARS` characters.
fn short_cjk_words(question: &str) -> Vec<String> {
    let question = bounded(question);
    let is_cjk = |c: char| {
        ('\u{4e00}'..='\u{9fff}').contains(&c)
            || ('\u{3040}'..='\u{30ff}').contains(&c)
            || ('\u{ac00}'..='\u{d7af}').contains(&c)
    };
    let mut words = Vec::new();
    let mut run = String::new();
    for c in question.chars().chain([' ']) {
        if is_cjk(c) {
            run.push(c);
        } else {
            if run.chars().count() == 2 && !words.contains(&run) {
                words.push(run.clone());
                if words.len() == MAX_TERMS {
                    break;
                }
            }
            run.clear();
        }
    }
    words
}

/// The best passages for a question in the given collections (all when empty): the
/// trigram index first, then a substring scan for two-character CJK words.
pub fn search(
    conn: &Connection,
    question: &str,
    collections: &[String],
    limit: i64,
) -> rusqlite::Result<Vec<Passage>> {
    if let Some(q) = fts_query(question) {
        let found = store::search(conn, &q, collections, limit)?;
        if !found.is_empty() {
            return Ok(found);
        }
    }
    let short = short_cjk_words(question);
    if short.is_empty() {
        return Ok(Vec::new());
    }
    store::search_substrings(conn, &short, collections, limit)
}

/// The `meta` row holding the fingerprint of the guides collection `docs` was built from.
const DOCS_FINGERPRINT: &str = "bundled_docs_fingerprint";

/// Builds collection `docs` from the bundled guides, unless it already holds exactly these
/// guides (the same binary starting again): splitting and indexing them touches code and
/// memory that an idle appliance then carries for nothing. Returns the passages and
/// whether they were rebuilt.
pub fn index_bundled_docs(conn: &mut Connection) -> rusqlite::Result<(usize, bool)> {
    use std::hash::{Hash, Hasher};
    // The same within one build, which is all that matters: another binary rebuilds.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    crate::docs::GUIDES.hash(&mut hasher);
    let fingerprint = hasher.finish() as i64;
    let indexed = store::count(conn, "docs")?;
    if indexed > 0 && store::fingerprint(conn, DOCS_FINGERPRINT)? == Some(fingerprint) {
        return Ok((indexed as usize, false));
    }
    let mut passages = Vec::new();
    for (slug, source) in crate::docs::GUIDES {
        let title = markdown::title(source).unwrap_or(slug);
        passages.extend(split_markdown(source, title, &format!("/docs/{slug}")));
    }
    crate::db::write_tx(conn, |tx| {
        store::replace_collection(tx, "docs", &passages)?;
        store::set_fingerprint(tx, DOCS_FINGERPRINT, fingerprint)
    })?;
    Ok((passages.len(), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_headings_with_anchors() {
        let md = "# Keys\n\nIntro.\n\n## Create a key\n\nPOST it.\n\n```bash\n# not a heading\n```\n\n### Revoke\n\nGone.\n";
        let p = split_markdown(md, "API keys", "/docs/keys");
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].title.as_str(), p[0].url.as_str()), ("API keys", "/docs/keys"));
        assert_eq!(
            (p[1].title.as_str(), p[1].url.as_str()),
            ("API keys › Create a key", "/docs/keys#create-a-key")
        );
        assert!(p[1].body.contains("# not a heading"));
        assert_eq!(p[2].url, "/docs/keys#revoke");
        let h = split_html("<h1>T</h1><p>a &amp; b</p><h2>Part two</h2><p>more</p>", "Notes", "/kb/notes");
        assert_eq!(h[1].title, "Notes › Part two");
        assert!(h[0].body.contains("a & b"));
    }

    #[test]
    fn questions_become_fts_queries() {
        assert_eq!(fts_query("How do I create an API key?").unwrap(), "\"create\" OR \"api\" OR \"key\"");
        assert_eq!(
            fts_query("如何创建密钥").unwrap(),
            "\"如何创\" OR \"何创建\" OR \"创建密\" OR \"建密钥\""
        );
        assert_eq!(fts_query("a b ?"), None);
        assert_eq!(
            fts_query("quote\"inside").unwrap(),
            "\"quote\" OR \"inside\"",
            "quotes never reach the query"
        );
    }

    /// Regression: a 980 KB message of two-character CJK words made ~140,000 substring
    /// terms (about 28 s of CPU in the scan); the terms and the text read are bounded.
    #[test]
    fn huge_questions_make_bounded_queries() {
        let chars: Vec<char> = ('\u{4e00}'..='\u{4fff}').collect();
        let words: Vec<String> =
            chars.chunks(2).cycle().take(140_000).map(|w| w.iter().collect::<String>()).collect();
        let huge = words.join(" ");
        assert!(huge.len() > 900_000);
        let short = short_cjk_words(&huge);
        assert_eq!(short.len(), MAX_TERMS);
        assert_eq!(short[0], "一丁", "the first words of the question");
        assert_eq!(short_cjk_words("玫瑰 玫瑰 浇水"), ["玫瑰", "浇水"], "each word once");
        let fts = fts_query(&"玫瑰浇水施肥修剪".repeat(100_000)).unwrap();
        assert!(fts.matches(" OR ").count() < MAX_TERMS, "{fts}");
        let english = "tomatoes watering schedule ".repeat(40_000) + "zebra";
        assert!(!fts_query(&english).unwrap().contains("zebra"), "text beyond the bound is not read");
        assert_eq!(bounded("短"), "短");
        assert_eq!(bounded(&"é".repeat(MAX_QUESTION_CHARS + 5)).chars().count(), MAX_QUESTION_CHARS);
    }
}
