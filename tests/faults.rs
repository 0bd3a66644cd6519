//! The fault suite: a multi-stage run with 2 workers killed (SIGKILL) at 100 random moments, each kill
//! followed by another run; the workspace must end exactly as an uninterrupted run leaves it: no item
//! lost, no corrupt object, the same manifests and the same object bytes.

mod util;

use std::path::Path;
use std::time::{Duration, Instant};

use util::*;

fn pipeline(dir: &Path) -> std::path::PathBuf {
    let classes = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/classes-phantom.toml");
    let head = labelled_phantom_head("faults", 21, "count = 8, width = 72, height = 96");
    write_pipeline(
        dir,
        "f.toml",
        &format!(
            "{head}\n[[stage]]\nid = \"split\"\nkind = \"split\"\ninputs = [\"merge\"]\n\n\
             [[stage]]\nid = \"augment\"\nkind = \"augment\"\ninputs = [\"merge\"]\n\n\
             [[stage]]\nid = \"crop\"\nkind = \"balanced-crop\"\ninputs = [\"augment\"]\nparams = {{ classes = \"{0}\", sizes = [32], per_image = 1 }}\n\n\
             [[stage]]\nid = \"sheet\"\nkind = \"contact-sheet\"\ninputs = [\"crop\"]\nparams = {{ classes = \"{0}\", count = 8 }}\n",
            classes.display()
        ),
    )
}

const STAGES: [&str; 7] = ["phantom", "ingest", "merge", "split", "augment", "crop", "sheet"];

fn start(p: &Path, ws: &Path) -> std::process::Child {
    cmd(&["run", p.to_str().unwrap(), "--workspace", ws.to_str().unwrap(), "--workers", "2", "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_hundred_kills_at_random_moments_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let (reference, faulty) = (dir.path().join("reference"), dir.path().join("faulty"));
    let t0 = Instant::now();
    assert!(start(&p, &reference).wait().unwrap().success());
    let full = t0.elapsed();
    // (PNG phantoms: no pseudonym key differs between the two workspaces.)
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut kills = 0;
    while kills < 100 {
        let mut child = start(&p, &faulty);
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let wait = Duration::from_secs_f64(full.as_secs_f64() * 1.2 * ((seed >> 11) as f64 / (1u64 << 53) as f64));
        std::thread::sleep(wait);
        match child.try_wait().unwrap() {
            Some(_) => {
                // finished before the kill: start again from an empty workspace so that kills keep
                // landing in the middle of real work
                std::fs::remove_dir_all(&faulty).unwrap();
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
            }
        }
    }
    let out = run(&["run", p.to_str().unwrap(), "--workspace", faulty.to_str().unwrap(), "--workers", "2", "--json", "--quiet"]);
    let r = last_json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(r["failed"], 0, "{r}");
    for s in STAGES {
        let (a, b) = (comparable(&reference, s), comparable(&faulty, s));
        assert_eq!(a.len(), b.len(), "stage {s}: items lost");
        assert_eq!(a, b, "stage {s}");
        for row in &b {
            for o in &row.outputs {
                assert!(mammoflow::store::Cas::verify(&faulty, &o.file), "{s}/{}: corrupt object {}", row.item_id, o.file);
            }
        }
    }
    let st = status_json(&p, &["--workspace", faulty.to_str().unwrap()]);
    assert_eq!(st["stale"], 0, "{st}");
}
