//! `mammoflow dag`: the stage graph as text or Graphviz dot.

use super::args::DagArgs;

pub(crate) fn dag(a: DagArgs) -> anyhow::Result<i32> {
    let p = super::load(&a.common)?;
    let selected = p.selected(a.common.until.as_deref())?;
    if a.dot {
        println!("digraph \"{}\" {{\n  rankdir=LR;", p.name);
        for (i, s) in p.stages.iter().enumerate().filter(|(i, _)| selected[*i]) {
            let _ = i;
            println!("  \"{}\" [shape=box, label=\"{}\\n({})\"];", s.id, s.id, s.kind);
            for inp in &s.inputs {
                println!("  \"{inp}\" -> \"{}\";", s.id);
            }
        }
        println!("}}");
    } else {
        println!("pipeline {} (workspace {})", p.name, p.workspace.display());
        let w = p.stages.iter().map(|s| s.id.len()).max().unwrap_or(0).max(16);
        for (_, s) in p.stages.iter().enumerate().filter(|(i, _)| selected[*i]) {
            let from = if s.inputs.is_empty() { "(source)".to_string() } else { format!("<- {}", s.inputs.join(", ")) };
            println!("  {:<w$} {:<14} {from}", s.id, s.kind);
        }
    }
    Ok(0)
}
