//! Source locations (file:line:col) for configuration errors, and "did you mean".

use std::ops::Range;
use std::path::Path;

/// 1-based line and column of byte `offset` in `text` (column counts characters).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before.get(line_start..).map(|s| s.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// Formats `file:line:col: message` for a span in `text`.
pub fn at(file: &Path, text: &str, span: Option<Range<usize>>, message: &str) -> String {
    match span {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!("{}:{line}:{col}: {message}", file.display())
        }
        None => format!("{}: {message}", file.display()),
    }
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Rewrites a serde/toml message into one line, adding a suggestion for
/// `unknown field `x`, expected one of `a`, `b`` and `unknown variant` errors.
/// Control characters the message quotes from the input (`unknown variant
/// `\0``) are escaped, so no input can add lines or terminal escapes to
/// kiln's output.
pub fn explain_toml_message(message: &str) -> String {
    let one_line: String = message
        .trim()
        .replace('\n', " ")
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() { c.escape_debug().collect() } else { vec![c] };
            escaped
        })
        .collect();
    for prefix in ["unknown field `", "unknown variant `"] {
        if let Some(rest) = one_line.strip_prefix(prefix) {
            let Some(end) = rest.find('`') else { break };
            let word = &rest[..end];
            let expected: Vec<&str> = rest[end..].split('`').skip(2).step_by(2).collect();
            if let Some(s) = suggest(word, expected.iter().copied()) {
                return format!("{one_line} (did you mean `{s}`?)");
            }
        }
    }
    one_line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 8), (2, 3));
        assert_eq!(line_col(t, 999), (3, 1));
    }

    #[test]
    fn suggests_close_keys() {
        let m = "unknown field `archtectures`, expected one of `name`, `architectures`";
        assert!(explain_toml_message(m).ends_with("(did you mean `architectures`?)"));
        let far = "unknown field `zzz`, expected one of `name`, `architectures`";
        assert!(!explain_toml_message(far).contains("did you mean"));
    }

    #[test]
    fn quoted_input_is_escaped() {
        let m = explain_toml_message("unknown variant `\0\r\u{1b}[2J`, expected `amd64`");
        assert!(!m.chars().any(char::is_control), "{m:?}");
        assert!(m.contains("\\0\\r\\u{1b}"), "{m:?}");
    }
}
