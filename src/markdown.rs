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

/// A guide's one-line summary: the first sentence (or clause, up to `. `, `: ` or `; `
/// outside code) of the paragraph after the title, for the guide index.
pub fn summary(markdown: &str) -> Option<String> {
    let paragraph = markdown
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("# "))
        .skip(1)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('>') && !l.starts_with("```"))?;
    let mut in_code = false;
    let mut end = paragraph.len();
    for (i, c) in paragraph.char_indices() {
        match c {
            '`' => in_code = !in_code,
            '.' | ':' | ';' if !in_code && paragraph[i + 1..].starts_with(' ') => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let sentence = paragraph[..end].trim_end_matches('.');
    Some(format!("{sentence}."))
}

/// Renders inline markup of one line or paragraph.
pub fn inline(text: &str) -> String {
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
        i = block(&lines, i, &mut html);
    }
    html
}

/// Renders the block that starts at line `i` and returns the index of the line after it.
/// The order of the tests is the precedence of the block kinds: a line that could open two
/// kinds opens the first one here, and a paragraph is what no other kind claims.
fn block(lines: &[&str], i: usize, html: &mut String) -> usize {
    let trimmed = lines[i].trim();
    if trimmed.is_empty() {
        i + 1
    } else if let Some(lang) = trimmed.strip_prefix("```") {
        code_block(lines, i, lang, html)
    } else if let Some(level) = heading_level(trimmed) {
        heading(level, trimmed[level + 1..].trim(), html);
        i + 1
    } else if trimmed.starts_with('|') && i + 1 < lines.len() && is_table_separator(lines[i + 1]) {
        table(lines, i, html)
    } else if bullet_item(trimmed).is_some() {
        list(lines, i, "ul", bullet_item, |next| next.starts_with("- "), html)
    } else if ordered_item(trimmed).is_some() {
        list(lines, i, "ol", ordered_item, |next| ordered_item(next).is_some(), html)
    } else if let Some(quote) = trimmed.strip_prefix('>') {
        blockquote(lines, i, quote, html)
    } else {
        paragraph(lines, i, html)
    }
}

/// A fenced code block from its opening fence at line `i`; an unclosed fence runs to the
/// end of the guide. The text inside is escaped but never parsed for inline markup.
fn code_block(lines: &[&str], mut i: usize, lang: &str, html: &mut String) -> usize {
    let mut code = String::new();
    i += 1;
    while i < lines.len() && !lines[i].trim_start().starts_with("```") {
        code.push_str(lines[i]);
        code.push('\n');
        i += 1;
    }
    let class = if lang.trim().is_empty() {
        String::new()
    } else {
        format!(" class=\"language-{}\"", escape(lang.trim()))
    };
    html.push_str(&format!("<pre><code{class}>{}</code></pre>\n", escape(&code)));
    i + 1
}

/// The level of a `#` to `####` heading line; deeper headings are text.
fn heading_level(trimmed: &str) -> Option<usize> {
    (1..=4).find(|n| trimmed.starts_with(&format!("{} ", "#".repeat(*n))))
}

/// A heading. The page title (`#`) gets no anchor because the page itself is its link;
/// every other level gets an `id` and a `#` link so a section can be shared. The link comes
/// after the text: it is hidden until hovered, and in front it would indent the heading.
fn heading(level: usize, text: &str, html: &mut String) {
    if level == 1 {
        html.push_str(&format!("<h1>{}</h1>\n", inline(text)));
        return;
    }
    let id = slug(text);
    html.push_str(&format!(
        "<h{level} id=\"{id}\">{}<a class=\"anchor\" href=\"#{id}\" aria-label=\"Link to this section\">#</a></h{level}>\n",
        inline(text)
    ));
}

/// A pipe table whose head is line `i` and whose separator is line `i + 1`; the body runs
/// while lines start with `|`.
fn table(lines: &[&str], mut i: usize, html: &mut String) -> usize {
    html.push_str("<table>\n<thead><tr>");
    for cell in table_cells(lines[i].trim()) {
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
    i
}

/// The text of a `- ` or `* ` list item line.
fn bullet_item(trimmed: &str) -> Option<&str> {
    trimmed.strip_prefix("- ").or_else(|| trimmed.strip_prefix("* "))
}

/// A flat list (`tag` is `ul` or `ol`) from line `i`: items as long as `item` finds one,
/// each followed by its indented continuation lines until a blank line or a line that
/// `starts_item` says begins the next item.
fn list(
    lines: &[&str],
    mut i: usize,
    tag: &str,
    item: fn(&str) -> Option<&str>,
    starts_item: fn(&str) -> bool,
    html: &mut String,
) -> usize {
    html.push_str(&format!("<{tag}>\n"));
    while let Some(first) = lines.get(i).and_then(|l| item(l.trim())) {
        let mut text = first.to_owned();
        i += 1;
        while i < lines.len()
            && lines[i].starts_with("  ")
            && !lines[i].trim().is_empty()
            && !starts_item(lines[i].trim())
        {
            text.push(' ');
            text.push_str(lines[i].trim());
            i += 1;
        }
        html.push_str(&format!("<li>{}</li>\n", inline(&text)));
    }
    html.push_str(&format!("</{tag}>\n"));
    i
}

/// A blockquote of one paragraph: the `>` lines from line `i`, joined.
fn blockquote(lines: &[&str], mut i: usize, first: &str, html: &mut String) -> usize {
    let mut text = first.trim().to_owned();
    i += 1;
    while i < lines.len() && lines[i].trim().starts_with('>') {
        text.push(' ');
        text.push_str(lines[i].trim()[1..].trim());
        i += 1;
    }
    html.push_str(&format!("<blockquote><p>{}</p></blockquote>\n", inline(&text)));
    i
}

/// A paragraph from line `i`: lines joined until a blank line or one that opens another
/// block (a `#` line, a fence, a `-` or numbered item, a `|` line or a quote), so those
/// need no blank line before them.
fn paragraph(lines: &[&str], mut i: usize, html: &mut String) -> usize {
    let mut text = lines[i].trim().to_owned();
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
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_the_first_clause_after_the_title_outside_code() {
        let md = "# T\n\nCall `a: b; c.d` with keys: then more. And more.\n";
        assert_eq!(summary(md).as_deref(), Some("Call `a: b; c.d` with keys."));
        assert_eq!(summary("# T\n\nOne sentence only").as_deref(), Some("One sentence only."));
        assert_eq!(summary("# T\n"), None);
        for (slug, source) in crate::docs::GUIDES {
            assert!(summary(source).is_some_and(|s| s.len() > 20), "{slug} has a summary");
        }
    }

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

    /// Every block kind and its edge cases (precedence, continuation lines, unclosed
    /// fences, lines that look like a block but are not), pinned byte for byte: the
    /// expected HTML is what the renderer wrote before `render` was split into one
    /// function per block kind, so a refactor that changes a byte fails here.
    #[test]
    fn renders_a_rich_sample_byte_for_byte() {
        let md = r##"# Title with `code` & <b>

Intro *it* **bold *nested*** and [link](https://x.example/?a=1&b="2") [bad](ftp://x) [rel](#top) * lone star ** and `unclosed
continued line
* not a list break here
## Second `level`
### Third: A-B c
#### Fourth
##### Fifth is text
```
plain <code>
```

```  rust  
fn main() {}
   ```
- one
  continued
  * star continuation
- two
* three

1. first
  more of first
2. second
   3. third-ish
10. tenth
> quote one
> quote two
>three
| a | b **c** |
|:---|---:|
| 1 | 2 |
|3|
not table
| lone | pipe |
| no sep |
paragraph
- breaks
text
1. ordered breaks
x
> quote breaks
y
```
unclosed code
"##;
        let expected = r##"<h1>Title with <code>code</code> &amp; &lt;b&gt;</h1>
<p>Intro <em>it</em> <strong>bold *nested</strong><em> and <a href="https://x.example/?a=1&amp;b=&quot;2&quot;">link</a> <a href="#">bad</a> <a href="#top">rel</a> </em> lone star *<em> and `unclosed continued line </em> not a list break here</p>
<h2 id="second-level">Second <code>level</code><a class="anchor" href="#second-level" aria-label="Link to this section">#</a></h2>
<h3 id="third-a-b-c">Third: A-B c<a class="anchor" href="#third-a-b-c" aria-label="Link to this section">#</a></h3>
<h4 id="fourth">Fourth<a class="anchor" href="#fourth" aria-label="Link to this section">#</a></h4>
<p>##### Fifth is text</p>
<pre><code>plain &lt;code&gt;
</code></pre>
<pre><code class="language-rust">fn main() {}
</code></pre>
<ul>
<li>one continued * star continuation</li>
<li>two</li>
<li>three</li>
</ul>
<ol>
<li>first more of first</li>
<li>second</li>
<li>third-ish</li>
<li>tenth</li>
</ol>
<blockquote><p>quote one quote two three</p></blockquote>
<table>
<thead><tr><th>a</th><th>b <strong>c</strong></th></tr></thead>
<tbody>
<tr><td>1</td><td>2</td></tr>
<tr><td>3</td></tr>
</tbody></table>
<p>not table</p>
<p>| lone | pipe |</p>
<p>| no sep | paragraph</p>
<ul>
<li>breaks</li>
</ul>
<p>text</p>
<ol>
<li>ordered breaks</li>
</ol>
<p>x</p>
<blockquote><p>quote breaks</p></blockquote>
<p>y</p>
<pre><code>unclosed code
</code></pre>
"##;
        assert_eq!(render(md), expected);
    }
}
