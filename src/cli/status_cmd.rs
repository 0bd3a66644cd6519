//! `mammoflow status`.

use super::args::StatusArgs;

pub(crate) fn status(a: StatusArgs) -> anyhow::Result<i32> {
    let pipeline = super::load(&a.common)?;
    let (stages, warnings) = crate::run::status(&pipeline, a.common.until.as_deref())?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if a.failed {
        let all: Vec<&crate::exec::FailedItem> = stages.iter().flat_map(|s| &s.failures).collect();
        if a.json {
            println!("{}", serde_json::to_string(&serde_json::json!({ "failed": all }))?);
        } else {
            for f in &all {
                println!("{}/{}: {}{}", f.stage, f.item, f.error, if f.transient { " (transient: the next run retries it)" } else { "" });
            }
            println!("{} failed item(s)", all.len());
        }
        return Ok(0);
    }
    let (mut fresh, mut stale, mut failed) = (0, 0, 0);
    let w = stages.iter().map(|s| s.id.len()).max().unwrap_or(0).max(16);
    for s in &stages {
        fresh += s.fresh;
        stale += s.stale;
        failed += s.failed;
        println!("{:<w$} {:>6} items  {:>6} fresh  {:>6} stale  {:>5} failed", s.id, s.items, s.fresh, s.stale, s.failed);
        if !a.json {
            for (reason, n) in &s.reasons {
                println!("{:<w$}   {n} {reason}", "");
            }
            if s.skipped_inputs > 0 {
                println!("{:<w$}   left out {} failed input(s) (on_failed_inputs = \"skip\")", "", s.skipped_inputs);
            }
            for it in s.stale_items.iter().take(10) {
                println!("{:<w$}     {} ({})", "", it.item, it.reason);
            }
            if s.stale_items.len() > 10 {
                println!("{:<w$}     ... and {} more (see --json)", "", s.stale_items.len() - 10);
            }
        }
    }
    if a.json {
        let v = serde_json::json!({ "stages": stages, "fresh": fresh, "stale": stale, "failed": failed });
        println!("{}", serde_json::to_string(&v)?);
    }
    Ok(0)
}
