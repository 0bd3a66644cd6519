//! `mammoflow verify`: re-hash every object the manifests name; repair by deleting the corrupt ones and
//! recomputing them (as `git fsck`, then a run).

use super::args::VerifyArgs;
use super::load;

/// `verify`: hash every object; repair by deleting the corrupt ones and running the selected stages.
pub(crate) fn verify(a: VerifyArgs) -> anyhow::Result<i32> {
    let p = load(&a.common)?;
    let report = crate::verify::verify(&p, a.common.until.as_deref(), !a.no_repair)?;
    println!("verify: {} objects ({:.1} MiB) intact, {} corrupt, {} missing", report.objects, report.bytes as f64 / 1048576.0, report.corrupt.len(), report.missing.len());
    for b in report.corrupt.iter().take(20) {
        println!("corrupt: {}/{}: {}", b.stage, b.item, b.file);
    }
    for b in report.missing.iter().take(20) {
        println!("missing: {}/{}: {}", b.stage, b.item, b.file);
    }
    let broken = report.corrupt.len() + report.missing.len();
    let mut recomputed = 0;
    if broken > 0 && !a.no_repair {
        let opts = crate::run::RunOptions {
            until: a.common.until.clone(),
            cluster: crate::exec::Cluster::Local { workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) },
            retry_failed: false,
            progress: crate::exec::ProgressMode::Quiet,
            command: "mammoflow verify".into(),
            order: Default::default(),
        };
        let run = crate::run::run(p, &opts)?;
        recomputed = run.computed;
        println!("repaired: {recomputed} item(s) recomputed");
    }
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["recomputed"] = recomputed.into();
        println!("{}", serde_json::to_string(&v)?);
    }
    Ok(if broken > 0 && a.no_repair { 1 } else { 0 })
}
