//! Progress reporting on stderr while stages run side by side: on a terminal one indicatif bar per
//! running stage, stacked (items/s and ETA each); otherwise one log line for all running stages at most
//! every two seconds, plus a line when a stage starts and ends; nothing with `--quiet`.

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

/// One stage's counters.
struct StageLine {
    name: String,
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    failed: u64,
    started: Option<Instant>,
    running: bool,
}

/// Progress of every stage of a run.
pub struct Progress {
    plain: bool,
    bars: bool,
    stages: Vec<StageLine>,
    last_log: Instant,
}

impl Progress {
    /// Reports stages `(name, most items it may compute)`, by plan position (pending items may turn out
    /// fresh: [`Progress::shrink`]).
    pub fn new(mode: ProgressMode, stages: Vec<(String, u64)>) -> Self {
        let tty = std::io::stderr().is_terminal();
        let stages = stages.into_iter().map(|(name, total)| StageLine { name, bar: None, total, done: 0, failed: 0, started: None, running: false }).collect();
        Progress {
            plain: mode == ProgressMode::Plain || (mode == ProgressMode::Auto && !tty),
            bars: mode == ProgressMode::Auto && tty,
            stages,
            last_log: Instant::now(),
        }
    }

    /// One of stage `k`'s expected items turned out fresh.
    pub fn shrink(&mut self, k: usize) {
        let s = &mut self.stages[k];
        s.total = s.total.saturating_sub(1);
        if let Some(b) = &s.bar {
            b.set_length(s.total);
        }
    }

    /// Stage `k` hands out its first item.
    pub fn begin(&mut self, k: usize) {
        let s = &mut self.stages[k];
        if s.running {
            return;
        }
        s.running = true;
        s.started = Some(Instant::now());
        // A stage of one item (split, a training) shows no bar of its own: 0/1 says nothing, and a
        // training draws its epochs' bars.
        if self.bars && s.total > 1 {
            let b = ProgressBar::new(s.total);
            b.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_prefix(s.name.clone());
            s.bar = Some(crate::term::bars().add(b));
        }
        if self.plain {
            eprintln!("{}: computing up to {} items", s.name, s.total);
        }
    }

    /// One item of stage `k` finished.
    pub fn inc(&mut self, k: usize, failed: bool) {
        let s = &mut self.stages[k];
        s.done += 1;
        s.failed += failed as u64;
        if let Some(b) = &s.bar {
            b.inc(1);
            if s.failed > 0 {
                b.set_message(format!("{} failed", s.failed));
            }
        }
        if self.plain && self.last_log.elapsed() > Duration::from_secs(2) {
            self.last_log = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    /// Every running stage on one line: `ingest 12/24 3.1/s ETA 4 s | merge 8/24 ...`.
    fn line(&self) -> String {
        let parts: Vec<String> = self
            .stages
            .iter()
            .filter(|s| s.running)
            .map(|s| {
                let rate = s.done as f64 / s.started.map_or(1e-9, |t| t.elapsed().as_secs_f64().max(1e-9));
                // no estimate before the first result (a stage waiting on another's items)
                let eta = if s.done == 0 { "-".to_string() } else { format!("{:.0} s", s.total.saturating_sub(s.done) as f64 / rate) };
                let failed = if s.failed > 0 { format!(", {} failed", s.failed) } else { String::new() };
                format!("{} {}/{} {rate:.1}/s ETA {eta}{failed}", s.name, s.done, s.total)
            })
            .collect();
        parts.join(" | ")
    }

    /// Stage `k` is complete.
    pub fn finish(&mut self, k: usize) {
        let s = &mut self.stages[k];
        if let Some(b) = s.bar.take() {
            b.finish_and_clear();
            crate::term::bars().remove(&b);
        }
        if self.plain && s.running {
            let secs = s.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
            let failed = if s.failed > 0 { format!(", {} failed", s.failed) } else { String::new() };
            eprintln!("{}: done, {} computed in {secs:.1} s{failed}", s.name, s.done);
        }
        s.running = false;
    }
}
