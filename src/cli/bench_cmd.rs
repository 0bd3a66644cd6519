//! `mammoflow bench NAME`: a table, and with `--json` a last line
//! `{"bench":NAME,"rows":[{"case","unit","ours","peer","speedup"}]}`.

use crate::bench::{self, BenchOptions};

use super::args::BenchArgs;

pub(crate) fn bench(a: BenchArgs) -> anyhow::Result<i32> {
    let opts = BenchOptions { items: a.items, no_peer: a.no_peer, device: Some(a.device.clone()), layers: a.layers, model: a.model.clone(), child: a.child.clone() };
    let r = bench::run(&a.name, &opts)?;
    let f = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
    let f1 = |x: Option<f64>| x.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
    // Optional columns appear when some row has them.
    type Column = fn(&bench::Row) -> Option<f64>;
    let has = |g: Column| r.rows.iter().any(|row| g(row).is_some());
    let extra: Vec<(&str, Column)> = [
        ("candle", (|r: &bench::Row| r.candle) as Column),
        ("GFLOP/s", |r: &bench::Row| r.gflops),
        ("calls", |r: &bench::Row| r.calls),
        ("RSS MiB", |r: &bench::Row| r.rss_mib),
        ("peer RSS", |r: &bench::Row| r.peer_rss_mib),
    ]
    .into_iter()
    .filter(|(_, g)| has(*g))
    .collect();
    let width = r.rows.iter().map(|row| row.case.len()).max().unwrap_or(0).max(26);
    println!("bench {}", r.bench);
    print!("{:<width$} {:>6} {:>10} {:>10} {:>8}", "case", "unit", "ours", "peer", "speedup");
    for (name, _) in &extra {
        print!(" {name:>9}");
    }
    println!();
    for row in &r.rows {
        print!("{:<width$} {:>6} {:>10.3} {:>10} {:>8}", row.case, row.unit, row.ours, f(row.peer), row.speedup.map(|s| format!("{s:.2}x")).unwrap_or_else(|| "-".into()));
        for (_, g) in &extra {
            print!(" {:>9}", f1(g(row)));
        }
        println!();
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(0)
}
