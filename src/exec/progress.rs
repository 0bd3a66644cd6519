//! Progress reporting on stderr: an indicatif bar per stage on a terminal (items/s and ETA), plain log
//! lines otherwise (at most every two seconds, plus the end of each stage), nothing with `--quiet`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How to report progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars on a terminal, log lines otherwise.
    Auto,
    /// Log lines.
    Plain,
    /// Nothing.
    Quiet,
}

/// Progress of one stage.
pub struct StageProgress {
    bar: Option<ProgressBar>,
    plain: bool,
    name: String,
    total: u64,
    done: u64,
    failed: u64,
    started: Instant,
    last_log: Instant,
}

impl StageProgress {
    /// Starts reporting a stage with `total` items to compute.
    pub fn start(mode: ProgressMode, name: &str, total: u64) -> Self {
        let tty = std::io::stderr().is_terminal();
        // A stage of one item (split, a training) shows no bar of its own: 0/1 says nothing, and a
        // training draws its epochs' bars.
        let bar = (mode == ProgressMode::Auto && tty && total > 1).then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_prefix(name.to_string());
            b
        });
        let plain = mode == ProgressMode::Plain || (mode == ProgressMode::Auto && !tty);
        if plain && total > 0 {
            eprintln!("{name}: computing {total} items");
        }
        let now = Instant::now();
        StageProgress { bar, plain, name: name.to_string(), total, done: 0, failed: 0, started: now, last_log: now }
    }

    /// One item finished.
    pub fn inc(&mut self, failed: bool) {
        self.done += 1;
        self.failed += failed as u64;
        if let Some(b) = &self.bar {
            b.inc(1);
            if self.failed > 0 {
                b.set_message(format!("{} failed", self.failed));
            }
        } else if self.plain && self.last_log.elapsed() > Duration::from_secs(2) {
            self.last_log = Instant::now();
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            let eta = (self.total - self.done) as f64 / rate.max(1e-9);
            eprintln!("{}: {}/{} items, {rate:.1} items/s, ETA {eta:.0} s, {} failed", self.name, self.done, self.total, self.failed);
        }
    }

    /// Ends the stage's bar.
    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
