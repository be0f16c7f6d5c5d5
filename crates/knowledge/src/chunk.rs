//! Cutting documents into chunks the model can read whole: at most a budget of
//! model tokens each, never across a markdown heading (each chunk carries the
//! path of headings it sits under), code blocks kept whole when they fit and
//! cut at line ends (each piece fenced again) when they do not, and prose
//! carried over: each chunk after the first of a section begins with the last
//! sentences of the one before, about `overlap` tokens of them.

/// A piece of a document, ready to embed.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// The headings above it, `Title > Section > Subsection`; empty when none.
    pub heading: String,
    pub content: String,
    /// Model tokens of what is embedded (`heading` and `content`).
    pub tokens: usize,
}

impl Chunk {
    /// The text the model embeds: the heading path, then the content.
    pub fn embedded_text(&self) -> String {
        embedded_text(&self.heading, &self.content)
    }
}

/// What a chunk reads as to the model (and to a reranker): its heading path,
/// then its content.
pub fn embedded_text(heading: &str, content: &str) -> String {
    if heading.is_empty() { content.to_owned() } else { format!("{heading}\n\n{content}") }
}

/// Sizes, in model tokens.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// The most a chunk holds (heading included).
    pub max: usize,
    /// Prose carried from the end of one chunk into the next.
    pub overlap: usize,
}

impl Default for Sizes {
    fn default() -> Self {
        // The model reads 256 tokens; two go to its markers.
        Self { max: 200, overlap: 32 }
    }
}

/// What a document's text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    Markdown,
    Json,
}

impl Kind {
    pub fn of(content_type: &str) -> Self {
        match content_type {
            "text/markdown" => Kind::Markdown,
            "application/json" => Kind::Json,
            _ => Kind::Plain,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Block {
    /// A paragraph (or list, or quote): cut at sentences when too long.
    Prose(String),
    /// A fenced code block: its fence line, its lines, its closing fence.
    Code { fence: String, lang: String, lines: Vec<String> },
}

/// A run of blocks under one heading path.
#[derive(Debug, Default)]
struct Section {
    heading: String,
    blocks: Vec<Block>,
}

/// Cuts `text` into chunks of at most `sizes.max` tokens as `count` counts them.
pub fn chunk(text: &str, kind: Kind, sizes: Sizes, count: &dyn Fn(&str) -> usize) -> Vec<Chunk> {
    let text = match kind {
        // JSON reads best to the model as indented lines of keys and values.
        Kind::Json => serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| text.to_owned()),
        _ => text.to_owned(),
    };
    let sections = match kind {
        Kind::Markdown => markdown_sections(&text),
        Kind::Plain => vec![Section { heading: String::new(), blocks: paragraphs(&text) }],
        Kind::Json => vec![Section {
            heading: String::new(),
            blocks: vec![Block::Code { fence: String::new(), lang: String::new(), lines: lines(&text) }],
        }],
    };
    let mut out = Vec::new();
    for section in sections {
        pack(&section, sizes, count, &mut out);
    }
    out
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fn paragraphs(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(Block::Prose(current.join("\n")));
                current.clear();
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        out.push(Block::Prose(current.join("\n")));
    }
    out
}

/// ATX headings (`#` to `######`) outside code fences start sections.
fn markdown_sections(text: &str) -> Vec<Section> {
    let mut sections = vec![Section::default()];
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut prose: Vec<String> = Vec::new();
    let mut code: Option<(String, String, Vec<String>)> = None;
    let flush = |prose: &mut Vec<String>, sections: &mut Vec<Section>| {
        if !prose.is_empty() {
            if let Some(s) = sections.last_mut() {
                s.blocks.push(Block::Prose(prose.join("\n")));
            }
            prose.clear();
        }
    };
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some((fence, lang, body)) = code.as_mut() {
            if trimmed.starts_with(fence.as_str())
                && trimmed.trim_end().chars().all(|c| c == fence.as_bytes()[0] as char)
            {
                let block =
                    Block::Code { fence: fence.clone(), lang: lang.clone(), lines: std::mem::take(body) };
                if let Some(s) = sections.last_mut() {
                    s.blocks.push(block);
                }
                code = None;
            } else {
                body.push(line.to_owned());
            }
            continue;
        }
        if let Some(fence) = ["```", "~~~"].into_iter().find(|f| trimmed.starts_with(f)) {
            flush(&mut prose, &mut sections);
            let width = trimmed.chars().take_while(|&c| c == fence.as_bytes()[0] as char).count();
            let fence: String = trimmed.chars().take(width).collect();
            code = Some((fence.clone(), trimmed[width..].trim().to_owned(), Vec::new()));
            continue;
        }
        let level = trimmed.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&level) && trimmed[level..].starts_with(' ') {
            flush(&mut prose, &mut sections);
            let title = trimmed[level..].trim().trim_end_matches('#').trim().to_owned();
            while path.last().is_some_and(|(l, _)| *l >= level) {
                path.pop();
            }
            path.push((level, title));
            let heading = path.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(" > ");
            sections.push(Section { heading, blocks: Vec::new() });
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut prose, &mut sections);
        } else {
            prose.push(line.to_owned());
        }
    }
    flush(&mut prose, &mut sections);
    // An unclosed fence runs to the end of the document.
    if let Some((fence, lang, body)) = code
        && let Some(s) = sections.last_mut()
    {
        s.blocks.push(Block::Code { fence, lang, lines: body });
    }
    sections.retain(|s| !s.blocks.is_empty());
    sections
}

/// Sentences of a paragraph: cut after `.`, `!` or `?` followed by a space.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(b, b'.' | b'!' | b'?') && bytes.get(i + 1).is_some_and(|n| n.is_ascii_whitespace()) {
            let s = text[start..=i].trim();
            if !s.is_empty() {
                out.push(s.to_owned());
            }
            start = i + 1;
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

/// The most bytes one chunk holds, whatever its tokens: text that costs no
/// tokens (runs of blank lines, say) must not make a chunk huge.
const MAX_CHUNK_BYTES: usize = 16 * 1024;

/// Cuts a piece too long for any chunk at word boundaries. Each word is
/// counted once (word pieces add up across spaces), so this is linear.
fn words_within(text: &str, budget: usize, count: &dyn Fn(&str) -> usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut tokens = 0;
    for word in text.split_whitespace() {
        let n = count(word);
        if !current.is_empty() && (tokens + n > budget || current.len() + word.len() >= MAX_CHUNK_BYTES) {
            out.push(std::mem::take(&mut current));
            tokens = 0;
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
        tokens += n;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A unit the packer places whole: a sentence, a code piece.
#[derive(Debug, Clone)]
struct Unit {
    text: String,
    /// Its tokens, counted once.
    tokens: usize,
    /// Joined to the previous unit with a blank line (a new block) or a space.
    new_block: bool,
    /// Prose may be carried into the next chunk as overlap; code is not.
    prose: bool,
}

fn units(section: &Section, budget: usize, count: &dyn Fn(&str) -> usize) -> Vec<Unit> {
    let mut out = Vec::new();
    let unit = |text: String, new_block: bool, prose: bool| {
        let tokens = count(&text);
        Unit { text, tokens, new_block, prose }
    };
    for block in &section.blocks {
        match block {
            Block::Prose(text) => {
                let mut first = true;
                for sentence in sentences(text) {
                    let pieces = if count(&sentence) > budget || sentence.len() > MAX_CHUNK_BYTES {
                        words_within(&sentence, budget, count)
                    } else {
                        vec![sentence]
                    };
                    for piece in pieces {
                        out.push(unit(piece, first, true));
                        first = false;
                    }
                }
            }
            Block::Code { fence, lang, lines } => {
                let wrap = |body: &str| {
                    if fence.is_empty() { body.to_owned() } else { format!("{fence}{lang}\n{body}\n{fence}") }
                };
                let fences =
                    if fence.is_empty() { 0 } else { count(&format!("{fence}{lang}")) + count(fence) };
                // Lines counted once each and summed (a newline adds no token).
                let counted: Vec<(&str, usize)> = lines.iter().map(|l| (l.as_str(), count(l))).collect();
                let (total, bytes): (usize, usize) =
                    counted.iter().fold((fences, 0), |(t, b), (l, n)| (t + n, b + l.len() + 1));
                if total <= budget && bytes <= MAX_CHUNK_BYTES {
                    out.push(Unit {
                        text: wrap(&lines.join("\n")),
                        tokens: total,
                        new_block: true,
                        prose: false,
                    });
                    continue;
                }
                // Too long: pieces of whole lines, each fenced again.
                let mut body: Vec<&str> = Vec::new();
                let (mut tokens, mut size) = (fences, 0);
                let flush = |body: &mut Vec<&str>, tokens: usize, out: &mut Vec<Unit>| {
                    if !body.is_empty() {
                        out.push(Unit {
                            text: wrap(&body.join("\n")),
                            tokens,
                            new_block: true,
                            prose: false,
                        });
                        body.clear();
                    }
                };
                for (line, n) in counted {
                    if n + fences > budget || line.len() > MAX_CHUNK_BYTES {
                        // One line longer than the budget on its own: cut at words.
                        flush(&mut body, tokens, &mut out);
                        (tokens, size) = (fences, 0);
                        for piece in words_within(line, budget.saturating_sub(fences).max(1), count) {
                            out.push(unit(wrap(&piece), true, false));
                        }
                        continue;
                    }
                    if !body.is_empty() && (tokens + n > budget || size + line.len() + 1 > MAX_CHUNK_BYTES) {
                        flush(&mut body, tokens, &mut out);
                        (tokens, size) = (fences, 0);
                    }
                    body.push(line);
                    tokens += n;
                    size += line.len() + 1;
                }
                flush(&mut body, tokens, &mut out);
            }
        }
    }
    out
}

fn join(units: &[Unit]) -> String {
    let mut text = String::new();
    for (i, u) in units.iter().enumerate() {
        if i > 0 {
            text.push_str(if u.new_block { "\n\n" } else { " " });
        }
        text.push_str(&u.text);
    }
    text
}

fn tokens_of(units: &[Unit]) -> usize {
    units.iter().map(|u| u.tokens).sum()
}

fn bytes_of(units: &[Unit]) -> usize {
    units.iter().map(|u| u.text.len() + 2).sum()
}

fn pack(section: &Section, sizes: Sizes, count: &dyn Fn(&str) -> usize, out: &mut Vec<Chunk>) {
    let heading_tokens = if section.heading.is_empty() { 0 } else { count(&section.heading) + 2 };
    // A heading path longer than half the budget is cut (it is context, not content).
    let heading = if heading_tokens > sizes.max / 2 {
        words_within(&section.heading, sizes.max / 2, count).into_iter().next().unwrap_or_default()
    } else {
        section.heading.clone()
    };
    let budget = sizes.max.saturating_sub(if heading.is_empty() { 0 } else { count(&heading) + 2 }).max(8);
    let mut current: Vec<Unit> = Vec::new();
    let mut fresh = 0; // units in `current` not carried over from the last chunk
    let emit = |units: &[Unit], out: &mut Vec<Chunk>| {
        let content = join(units);
        let chunk = Chunk { heading: heading.clone(), tokens: 0, content };
        let tokens = count(&chunk.embedded_text());
        out.push(Chunk { tokens, ..chunk });
    };
    for unit in units(section, budget, count) {
        let over = tokens_of(&current) + unit.tokens > budget
            || bytes_of(&current) + unit.text.len() > MAX_CHUNK_BYTES;
        if fresh > 0 && over {
            emit(&current, out);
            // Carry the last sentences (prose only) into the next chunk.
            let mut carried: Vec<Unit> = Vec::new();
            for u in current.iter().rev() {
                if !u.prose || tokens_of(&carried) + u.tokens > sizes.overlap {
                    break;
                }
                carried.insert(0, u.clone());
            }
            if let Some(first) = carried.first_mut() {
                first.new_block = true;
            }
            // The carried text and the new unit must fit together.
            let mut next = carried;
            next.push(unit);
            while next.len() > 1 && (tokens_of(&next) > budget || bytes_of(&next) > MAX_CHUNK_BYTES) {
                next.remove(0);
            }
            current = next;
            fresh = 1;
        } else {
            current.push(unit);
            fresh += 1;
        }
    }
    if fresh > 0 {
        emit(&current, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Words as tokens: enough to test the cutting.
    fn words(text: &str) -> usize {
        text.split_whitespace().count()
    }

    #[test]
    fn never_crosses_a_heading_and_carries_the_heading_path() {
        let doc = "# Guide\n\nIntro text here.\n\n## Install\n\nRun the script. It works.\n\n## Use\n\nCall the API.\n";
        let chunks = chunk(doc, Kind::Markdown, Sizes { max: 50, overlap: 5 }, &words);
        let headings: Vec<&str> = chunks.iter().map(|c| c.heading.as_str()).collect();
        assert_eq!(headings, ["Guide", "Guide > Install", "Guide > Use"]);
        assert_eq!(chunks[1].content, "Run the script. It works.");
        assert!(chunks.iter().all(|c| c.tokens <= 50));
    }

    #[test]
    fn long_prose_is_cut_at_sentences_with_overlap_and_nothing_is_lost() {
        let sentences: Vec<String> =
            (0..40).map(|i| format!("Sentence number {i} says something useful.")).collect();
        let doc = sentences.join(" ");
        let sizes = Sizes { max: 40, overlap: 8 };
        let chunks = chunk(&doc, Kind::Plain, sizes, &words);
        assert!(chunks.len() > 4, "{} chunks", chunks.len());
        for c in &chunks {
            assert!(c.tokens <= 40, "{} tokens: {}", c.tokens, c.content);
            assert!(c.content.ends_with('.'), "cut mid-sentence: {}", c.content);
        }
        for s in &sentences {
            assert!(chunks.iter().any(|c| c.content.contains(s.as_str())), "lost: {s}");
        }
        // Each chunk after the first starts with the last sentence of the one before.
        for pair in chunks.windows(2) {
            let last =
                sentences.iter().rfind(|s| pair[0].content.ends_with(s.as_str())).expect("a last sentence");
            assert!(pair[1].content.starts_with(last.as_str()), "no overlap into: {}", pair[1].content);
        }
    }

    #[test]
    fn code_blocks_stay_whole_when_they_fit_and_are_fenced_again_when_cut() {
        let code: Vec<String> = (0..6).map(|i| format!("let x{i} = {i};")).collect();
        let doc = format!("# API\n\nExample:\n\n```rust\n{}\n```\n\nAfter.\n", code.join("\n"));
        let whole = chunk(&doc, Kind::Markdown, Sizes { max: 100, overlap: 5 }, &words);
        assert_eq!(whole.len(), 1);
        assert!(whole[0].content.contains(&format!("```rust\n{}\n```", code.join("\n"))));

        let big: Vec<String> = (0..60).map(|i| format!("let value_{i} = compute({i}, {i});")).collect();
        let doc = format!("# API\n\n```rust\n{}\n```\n", big.join("\n"));
        let cut = chunk(&doc, Kind::Markdown, Sizes { max: 60, overlap: 5 }, &words);
        assert!(cut.len() > 3);
        for c in &cut {
            assert!(
                c.content.starts_with("```rust\n") && c.content.ends_with("\n```"),
                "unfenced: {}",
                c.content
            );
            assert!(c.tokens <= 60);
        }
        for line in &big {
            assert_eq!(cut.iter().filter(|c| c.content.contains(line.as_str())).count(), 1, "{line}");
        }
    }

    #[test]
    fn a_heading_inside_code_is_code_and_json_is_indented() {
        let doc = "# Real\n\n```sh\n# not a heading\necho hi\n```\n";
        let chunks = chunk(doc, Kind::Markdown, Sizes::default(), &words);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].heading, "Real");
        assert!(chunks[0].content.contains("# not a heading"));

        let json =
            chunk(r#"{"name":"switchboard","limits":{"rate":10}}"#, Kind::Json, Sizes::default(), &words);
        assert_eq!(json.len(), 1);
        assert!(json[0].content.contains("\"rate\": 10"), "{}", json[0].content);
    }

    #[test]
    fn text_that_costs_no_tokens_cannot_make_a_chunk_huge_or_the_cut_slow() {
        // 200k blank lines inside a fence and 100k sentences that are only dots.
        let doc = format!("# T\n\n```\n{}w1 w2\n```\n\n{}", "\n".repeat(200_000), ". ".repeat(100_000));
        let started = std::time::Instant::now();
        let chunks = chunk(&doc, Kind::Markdown, Sizes::default(), &words);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
        assert!(chunks.iter().all(|c| c.content.len() <= MAX_CHUNK_BYTES + 64), "a chunk too large");
        assert!(chunks.iter().any(|c| c.content.contains("w1 w2")));
    }

    #[test]
    fn a_word_longer_than_anything_is_still_cut_to_size() {
        let doc = (0..300).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        let chunks = chunk(&doc, Kind::Plain, Sizes { max: 50, overlap: 10 }, &words);
        assert!(chunks.iter().all(|c| c.tokens <= 50));
        assert!(chunks.iter().any(|c| c.content.contains("w299")));
        assert!(chunks.is_empty() || chunks.iter().all(|c| !c.content.is_empty()));
        assert!(chunk("", Kind::Plain, Sizes::default(), &words).is_empty());
    }
}
