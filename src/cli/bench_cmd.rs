//! `mammoflow bench NAME`: a table, and with `--json` a last line
//! `{"bench":NAME,"rows":[{"case","unit","ours","peer","speedup"}]}`.

use crate::bench::{self, BenchOptions};

use super::args::BenchArgs;

pub(crate) fn bench(a: BenchArgs) -> anyhow::Result<i32> {
    let r = bench::run(&a.name, &BenchOptions { items: a.items, no_peer: a.no_peer, device: Some(a.device.clone()) })?;
    let f = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
    println!("bench {}", r.bench);
    println!("{:<26} {:>6} {:>10} {:>10} {:>8}", "case", "unit", "ours", "peer", "speedup");
    for row in &r.rows {
        println!("{:<26} {:>6} {:>10.3} {:>10} {:>8}", row.case, row.unit, row.ours, f(row.peer), row.speedup.map(|s| format!("{s:.1}x")).unwrap_or_else(|| "-".into()));
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(0)
}
