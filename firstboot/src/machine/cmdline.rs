//! The kernel command line: split as the kernel splits it, read from a file of
//! bounded size, each parameter that is not UTF-8 skipped with a warning.

use crate::http::escape;
use std::path::Path;

/// Splits a kernel command line the way the kernel does (`lib/cmdline.c`,
/// `next_arg`): words separated by whitespace, double quotes group spaces
/// (`key="a b"`), and quotes around a value or a whole word are removed.
pub fn cmdline_args(cmdline: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut chars = cmdline.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return out;
        }
        let mut word = String::new();
        let mut in_quote = false;
        while let Some(c) = chars.next_if(|c| in_quote || !c.is_whitespace()) {
            if c == '"' {
                in_quote = !in_quote;
            }
            word.push(c);
        }
        let word = match word.strip_prefix('"') {
            Some(w) => w.strip_suffix('"').unwrap_or(w).to_string(),
            None => word,
        };
        out.push(match word.split_once('=') {
            Some((k, v)) => {
                let v = match v.strip_prefix('"') {
                    Some(v) => v.strip_suffix('"').unwrap_or(v),
                    None => v,
                };
                (k.to_string(), Some(v.to_string()))
            }
            None => (word, None),
        });
    }
}

/// The most of a kernel command line that is read. The kernel's own
/// `COMMAND_LINE_SIZE` is 2048 bytes on x86 (`arch/x86/include/asm/setup.h`) and on
/// arm64 (`arch/arm64/include/uapi/asm/setup.h`), 4096 at most on any architecture
/// (s390, `arch/s390/include/uapi/asm/setup.h`); 64 KiB leaves room for a hand-written
/// `--cmdline FILE` and refuses `/dev/zero`-sized input.
pub const MAX_CMDLINE: usize = 64 << 10;

/// Splits raw command-line bytes into parameters as [`cmdline_args`] does (whitespace
/// outside double quotes) and keeps every parameter that is UTF-8; each one that is
/// not is skipped with a warning naming its position and its bytes (escaped), so one
/// bad byte never drops the rest of the line.
pub fn decode_cmdline(bytes: &[u8]) -> (String, Vec<String>) {
    let mut words: Vec<&[u8]> = Vec::new();
    let (mut start, mut in_quote) = (None, false);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'"' {
            in_quote = !in_quote;
        }
        if b.is_ascii_whitespace() && !in_quote {
            if let Some(s) = start.take() {
                words.push(&bytes[s..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push(&bytes[s..]);
    }
    let mut good = Vec::new();
    let mut warnings = Vec::new();
    for (n, w) in words.iter().enumerate() {
        match std::str::from_utf8(w) {
            Ok(t) => good.push(t),
            Err(_) => warnings.push(format!(
                "kernel command line: parameter {} ({}) is not UTF-8; skipped, the other parameters are used",
                n + 1,
                escape(&String::from_utf8_lossy(w))
            )),
        }
    }
    (good.join(" "), warnings)
}

/// Reads a kernel command line from `path`: a regular file of at most
/// [`MAX_CMDLINE`] bytes (opened non-blocking: a FIFO or a device is refused, not
/// read), decoded by [`decode_cmdline`].
pub fn read_cmdline(path: &Path) -> Result<(String, Vec<String>), String> {
    let bytes = super::paths::read_file_capped(path, MAX_CMDLINE)
        .map_err(|e| format!("kernel command line: {e} (a kernel's is at most 4 KiB)"))?;
    Ok(decode_cmdline(&bytes))
}
