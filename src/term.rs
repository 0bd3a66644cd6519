//! The terminal, shared by every layer: one [`indicatif::MultiProgress`] on stderr, so that the bars of
//! every running stage (drawn by the executor) and a training's epoch bar (drawn by the stage) stack
//! instead of overwriting each other, and log lines printed while bars are drawn land above them.

use std::sync::OnceLock;

use indicatif::MultiProgress;

/// The process's bars.
pub fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

/// Prints a line on stderr above any bars being drawn.
pub fn eprint_line(line: &str) {
    bars().suspend(|| eprintln!("{line}"));
}
