//! Byte offsets to `file:line:column`, and finding a param key's position in the source text.

use std::path::Path;

use crate::error::Error;

/// A pipeline file's path and text, for locating errors.
pub(crate) struct Located<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl Located<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        (line, col)
    }

    /// An [`Error::Pipeline`] at `offset`.
    pub fn error(&self, offset: usize, message: impl Into<String>, hint: Option<String>) -> Error {
        let (l, c) = self.line_col(offset);
        Error::Pipeline { at: format!("{}:{l}:{c}", self.file.display()), message: message.into(), hint }
    }
}

/// Byte offset of `key = ...` (or `key=` inside an inline table) within `text[start..end]`, searching from
/// the params table's position when known. Used to point a param error at its line.
pub(crate) fn locate_key(text: &str, start: usize, end: usize, params_at: Option<usize>, key: &str) -> Option<usize> {
    let from = params_at.unwrap_or(start).clamp(start, end);
    let region = &text[from..end.min(text.len())];
    let bytes = region.as_bytes();
    let mut search = 0;
    while let Some(p) = region[search..].find(key) {
        let at = search + p;
        let before_ok = at == 0 || !is_key_char(bytes[at - 1]);
        let after = region[at + key.len()..].trim_start_matches([' ', '\t']);
        if before_ok && after.starts_with('=') {
            return Some(from + at);
        }
        search = at + key.len();
    }
    None
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}
