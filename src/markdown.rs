//! A small Markdown renderer for the bundled guides in `static/docs/`.
//!
//! It supports exactly the subset the guides are written in: `#` headings (with anchors),
//! paragraphs, fenced code blocks, flat `-` and `1.` lists, pipe tables, one-paragraph
//! blockquotes, and inline `code`, **bold**, *italic* and `[links](url)`. Everything else is
//! text, and all text is HTML-escaped, so a guide can never inject markup.

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The anchor of a heading: lower-case alphanumeric words joined by `-`.
pub fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// The text of the first `# ` heading, if any.
pub fn title(markdown: &str) -> Option<&str> {
    markdown.lines().find_map(|l| l.strip_prefix("# ")).map(str::trim)
}

/// Renders inline markup of one line or paragraph.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '`'
            && let Some(end) = rest[1..].find('`')
        {
            out.push_str(&format!("<code>{}</code>", escape(&rest[1..1 + end])));
            rest = &rest[end + 2..];
            continue;
        }
        if rest.starts_with("**")
            && let Some(end) = rest[2..].find("**")
        {
            out.push_str(&format!("<strong>{}</strong>", inline(&rest[2..2 + end])));
            rest = &rest[end + 4..];
            continue;
        }
        if c == '*'
            && !rest.starts_with("**")
            && let Some(end) = rest[1..].find('*').filter(|e| *e > 0)
        {
            out.push_str(&format!("<em>{}</em>", inline(&rest[1..1 + end])));
            rest = &rest[end + 2..];
            continue;
        }
        if c == '['
            && let Some((label, url, used)) = link(rest)
        {
            let safe = url.starts_with('/')
                || url.starts_with('#')
                || url.starts_with("https://")
                || url.starts_with("http://");
            let href = if safe { escape(url) } else { "#".to_owned() };
            out.push_str(&format!("<a href=\"{href}\">{}</a>", inline(label)));
            rest = &rest[used..];
            continue;
        }
        out.push_str(&escape(&c.to_string()));
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `[label](url)` at the start of `s`: (label, url, bytes used).
fn link(s: &str) -> Option<(&str, &str, usize)> {
    let close = s.find("](")?;
    let end = s[close + 2..].find(')')? + close + 2;
    Some((&s[1..close], &s[close + 2..end], end + 1))
}

fn table_cells(line: &str) -> Vec<&str> {
    let line = line.trim().trim_start_matches('|').trim_end_matches('|');
    line.split('|').map(str::trim).collect()
}

fn is_table_separator(line: &str) -> bool {
    let cells = table_cells(line);
    !cells.is_empty()
        && cells.iter().all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':' | ' ')))
}

fn ordered_item(line: &str) -> Option<&str> {
    let digits = line.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    line[digits..].strip_prefix(". ")
}

/// Renders a guide to an HTML fragment.
pub fn render(markdown: &str) -> String {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut html = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim();
        if trimmed.is_empty() {
            i += 1;
        } else if let Some(lang) = trimmed.strip_prefix("```") {
            let mut code = String::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                code.push_str(lines[i]);
                code.push('\n');
                i += 1;
            }
            i += 1;
            let class = if lang.trim().is_empty() {
                String::new()
            } else {
                format!(" class=\"language-{}\"", escape(lang.trim()))
            };
            html.push_str(&format!("<pre><code{class}>{}</code></pre>\n", escape(&code)));
        } else if let Some(level) = (1..=4).find(|n| trimmed.starts_with(&format!("{} ", "#".repeat(*n)))) {
            let text = trimmed[level + 1..].trim();
            if level == 1 {
                html.push_str(&format!("<h1>{}</h1>\n", inline(text)));
            } else {
                let id = slug(text);
                html.push_str(&format!(
                    "<h{level} id=\"{id}\"><a class=\"anchor\" href=\"#{id}\">#</a> {}</h{level}>\n",
                    inline(text)
                ));
            }
            i += 1;
        } else if trimmed.starts_with('|') && i + 1 < lines.len() && is_table_separator(lines[i + 1]) {
            html.push_str("<table>\n<thead><tr>");
            for cell in table_cells(trimmed) {
                html.push_str(&format!("<th>{}</th>", inline(cell)));
            }
            html.push_str("</tr></thead>\n<tbody>\n");
            i += 2;
            while i < lines.len() && lines[i].trim().starts_with('|') {
                html.push_str("<tr>");
                for cell in table_cells(lines[i]) {
                    html.push_str(&format!("<td>{}</td>", inline(cell)));
                }
                html.push_str("</tr>\n");
                i += 1;
            }
            html.push_str("</tbody></table>\n");
        } else if trimmed.starts_with("- ") || trimmed.starts_with("* ") {
            html.push_str("<ul>\n");
            while i < lines.len() && (lines[i].trim().starts_with("- ") || lines[i].trim().starts_with("* "))
            {
                let mut item = lines[i].trim()[2..].to_owned();
                i += 1;
                while i < lines.len()
                    && lines[i].starts_with("  ")
                    && !lines[i].trim().is_empty()
                    && !lines[i].trim().starts_with("- ")
                {
                    item.push(' ');
                    item.push_str(lines[i].trim());
                    i += 1;
                }
                html.push_str(&format!("<li>{}</li>\n", inline(&item)));
            }
            html.push_str("</ul>\n");
        } else if ordered_item(trimmed).is_some() {
            html.push_str("<ol>\n");
            while i < lines.len() && ordered_item(lines[i].trim()).is_some() {
                let mut item = ordered_item(lines[i].trim()).unwrap_or_default().to_owned();
                i += 1;
                while i < lines.len()
                    && lines[i].starts_with("  ")
                    && !lines[i].trim().is_empty()
                    && ordered_item(lines[i].trim()).is_none()
                {
                    item.push(' ');
                    item.push_str(lines[i].trim());
                    i += 1;
                }
                html.push_str(&format!("<li>{}</li>\n", inline(&item)));
            }
            html.push_str("</ol>\n");
        } else if let Some(quote) = trimmed.strip_prefix('>') {
            let mut text = quote.trim().to_owned();
            i += 1;
            while i < lines.len() && lines[i].trim().starts_with('>') {
                text.push(' ');
                text.push_str(lines[i].trim()[1..].trim());
                i += 1;
            }
            html.push_str(&format!("<blockquote><p>{}</p></blockquote>\n", inline(&text)));
        } else {
            let mut text = trimmed.to_owned();
            i += 1;
            while i < lines.len() {
                let next = lines[i].trim();
                if next.is_empty()
                    || next.starts_with('#')
                    || next.starts_with("```")
                    || next.starts_with("- ")
                    || next.starts_with('|')
                    || next.starts_with('>')
                    || ordered_item(next).is_some()
                {
                    break;
                }
                text.push(' ');
                text.push_str(next);
                i += 1;
            }
            html.push_str(&format!("<p>{}</p>\n", inline(&text)));
        }
    }
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_subset() {
        let md = "# Title\n\nSome `code` and **bold** and *it* [docs](/docs/keys).\n\n## Create a key\n\n```bash\ncurl -d '<x>' \"a\"\n```\n\n- one\n- two\n\n1. first\n2. second\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n> note\n";
        let html = render(md);
        assert!(html.contains("<h1>Title</h1>"));
        assert!(html.contains("<code>code</code>"));
        assert!(html.contains("<strong>bold</strong>"));
        assert!(html.contains("<em>it</em>"));
        assert!(html.contains("<a href=\"/docs/keys\">docs</a>"));
        assert!(html.contains("<h2 id=\"create-a-key\">"));
        assert!(html.contains(
            "<pre><code class=\"language-bash\">curl -d &#39;&lt;x&gt;&#39; &quot;a&quot;\n</code></pre>"
        ));
        assert!(html.contains("<ul>\n<li>one</li>\n<li>two</li>\n</ul>"));
        assert!(html.contains("<ol>\n<li>first</li>"));
        assert!(html.contains("<th>a</th><th>b</th>"));
        assert!(html.contains("<td>1</td><td>2</td>"));
        assert!(html.contains("<blockquote><p>note</p></blockquote>"));
        assert_eq!(title(md), Some("Title"));
    }

    #[test]
    fn escapes_markup_and_unsafe_links() {
        let html = render("<script>alert(1)</script> [x](javascript:alert(1))");
        assert!(!html.contains("<script>"));
        assert!(html.contains("<a href=\"#\">x</a>"));
    }
}
