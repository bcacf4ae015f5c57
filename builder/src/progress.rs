//! Progress reporting: bars on a terminal, plain lines in CI logs, nothing with `-q`.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Errors only (`-q`).
    Quiet,
    /// One line per step (default).
    Normal,
    /// Extra detail (`-v`).
    Verbose,
}

/// Reports progress to stderr.
#[derive(Clone)]
pub struct Progress {
    verbosity: Verbosity,
    bars: Option<MultiProgress>,
}

impl Progress {
    /// Progress bars when stderr is a terminal (and not quiet), plain lines otherwise.
    pub fn new(verbosity: Verbosity) -> Progress {
        let tty = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let bars = (tty && verbosity > Verbosity::Quiet)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { verbosity, bars }
    }

    /// A reporter that prints nothing.
    pub fn quiet() -> Progress {
        Progress { verbosity: Verbosity::Quiet, bars: None }
    }

    /// Prints a step line (suppressed by `-q`).
    pub fn step(&self, msg: impl AsRef<str>) {
        if self.verbosity >= Verbosity::Normal {
            self.print(msg.as_ref());
        }
    }

    /// Prints a detail line (only with `-v`).
    pub fn detail(&self, msg: impl AsRef<str>) {
        if self.verbosity >= Verbosity::Verbose {
            self.print(msg.as_ref());
        }
    }

    /// Prints a warning (always, unless quiet).
    pub fn warn(&self, msg: impl AsRef<str>) {
        if self.verbosity >= Verbosity::Normal {
            self.print(&format!("warning: {}", msg.as_ref()));
        }
    }

    fn print(&self, line: &str) {
        match &self.bars {
            Some(m) => {
                let _ = m.println(format!("kiln: {line}"));
            }
            None => eprintln!("kiln: {line}"),
        }
    }

    /// A byte-counting bar for one download (hidden when not on a terminal).
    pub fn bar(&self, label: &str, total: Option<u64>) -> ProgressBar {
        let Some(m) = &self.bars else { return ProgressBar::hidden() };
        let bar = m.add(ProgressBar::new(total.unwrap_or(0)));
        let style =
            ProgressStyle::with_template("{prefix:>28} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        bar
    }
}

/// Formats a byte count for humans (`12.3 MB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
