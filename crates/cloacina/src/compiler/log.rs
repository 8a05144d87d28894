//! A build's log, bounded: the newest lines up to a byte limit (older ones are dropped and
//! counted), and the first compiler error kept aside for the build's one-line reason.

use std::collections::VecDeque;

/// The default limit: the last 64 KiB of a build's output are kept.
pub const DEFAULT_LOG_LIMIT: usize = 64 * 1024;

/// The longest line kept (a generated line can be megabytes long).
const MAX_LINE: usize = 4096;

/// A bounded build log.
#[derive(Debug, Clone)]
pub struct BuildLog {
    limit: usize,
    lines: VecDeque<String>,
    bytes: usize,
    dropped_bytes: usize,
    first_error: Option<String>,
    /// The first error's location line (` --> src/lib.rs:3:5`) is still to come.
    want_location: bool,
}

impl BuildLog {
    pub fn new(limit: usize) -> Self {
        BuildLog {
            limit: limit.max(1024),
            lines: VecDeque::new(),
            bytes: 0,
            dropped_bytes: 0,
            first_error: None,
            want_location: false,
        }
    }

    /// Appends one line (control characters escaped, very long lines cut).
    pub fn push(&mut self, line: &str) {
        let line = crate::package::printable(line.trim_end_matches(['\r', '\n']), MAX_LINE);
        self.note_error(&line);
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > self.limit {
            let Some(old) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= old.len() + 1;
            self.dropped_bytes += old.len() + 1;
        }
    }

    fn note_error(&mut self, line: &str) {
        let trimmed = line.trim_start();
        if self.want_location {
            self.want_location = false;
            if let (Some(first), Some(location)) =
                (self.first_error.as_mut(), trimmed.strip_prefix("--> "))
            {
                first.push_str(&format!(" (at {location})"));
                return;
            }
        }
        if self.first_error.is_none()
            && (trimmed.starts_with("error[") || trimmed.starts_with("error:"))
            && !trimmed.starts_with("error: could not compile")
        {
            self.first_error = Some(trimmed.to_string());
            self.want_location = true;
        }
    }

    /// The first compiler error seen, with its location when rustc gave one.
    pub fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// The kept lines, preceded by a note of how much was dropped, if anything was.
    pub fn text(&self) -> String {
        let mut out = String::with_capacity(self.bytes + 64);
        if self.dropped_bytes > 0 {
            out.push_str(&format!(
                "[... {} earlier bytes of the log dropped]\n",
                self.dropped_bytes
            ));
        }
        for line in &self.lines {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// The last `lines` lines of `text`.
pub fn tail_lines(text: &str, lines: usize) -> &str {
    if lines == 0 {
        return "";
    }
    let trimmed = text.trim_end_matches('\n');
    let mut cut = trimmed.len();
    for _ in 0..lines {
        match trimmed[..cut].rfind('\n') {
            Some(i) => cut = i,
            None => return trimmed,
        }
    }
    &trimmed[cut + 1..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_lines_within_the_limit() {
        let mut log = BuildLog::new(1024);
        for i in 0..200 {
            log.push(&format!("line {i:04} {}", "x".repeat(20)));
        }
        let text = log.text();
        assert!(text.len() <= 1024 + 64, "{}", text.len());
        assert!(text.starts_with("[... "), "{text}");
        assert!(
            text.trim_end()
                .ends_with(&format!("line 0199 {}", "x".repeat(20)))
        );
        assert!(!text.contains("line 0000"));
    }

    #[test]
    fn the_first_error_is_kept_with_its_location() {
        let mut log = BuildLog::new(4096);
        for line in [
            "   Compiling p v1.0.0 (/tmp/p)",
            "warning: unused variable: `x`",
            "error[E0425]: cannot find value `nope` in this scope",
            "  --> src/lib.rs:10:5",
            "error: aborting due to 1 previous error",
            "error: could not compile `p` (lib) due to 1 previous error",
        ] {
            log.push(line);
        }
        assert_eq!(
            log.first_error(),
            Some("error[E0425]: cannot find value `nope` in this scope (at src/lib.rs:10:5)")
        );
        let mut log = BuildLog::new(4096);
        log.push("error: could not compile `p`");
        assert_eq!(log.first_error(), None);
        log.push("error: failed to parse manifest at `/x/Cargo.toml`");
        log.push("Caused by:");
        assert_eq!(
            log.first_error(),
            Some("error: failed to parse manifest at `/x/Cargo.toml`")
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut log = BuildLog::new(4096);
        log.push("\u{1b}[31mred\u{1b}[0m");
        assert!(!log.text().contains('\u{1b}'), "{}", log.text());
    }

    #[test]
    fn tails() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a\nb\nc", 5), "a\nb\nc");
        assert_eq!(tail_lines("", 3), "");
        assert_eq!(tail_lines("a\nb", 0), "");
    }
}
