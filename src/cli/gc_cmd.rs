//! `mammoflow gc`: delete the objects no manifest names.

use super::args::GcArgs;
use super::load;

pub(crate) fn gc(a: GcArgs) -> anyhow::Result<i32> {
    let p = load(&a.common)?;
    let r = crate::gc::gc(&p)?;
    println!("gc: deleted {} objects, freed {} bytes ({:.1} MiB), kept {}", r.files, r.bytes, r.bytes as f64 / 1048576.0, r.kept);
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(0)
}
