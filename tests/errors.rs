//! Bad input: clear messages naming the file and the problem, recorded in the manifest, other items
//! intact; bad pipeline files and locked workspaces refused before any work.

mod util;

use util::*;

fn ddsm_pipeline(dir: &std::path::Path) -> std::path::PathBuf {
    write_pipeline(
        dir,
        "d.toml",
        r#"[pipeline]
name = "d"
workspace = "ws"

[[stage]]
id = "ingest"
kind = "ingest-png"
[stage.params]
root = "ddsm-tissue"
regions = ["background", "adipose", "fibroglandular", "pectoral"]

[[stage]]
id = "crop"
kind = "center-crop"
inputs = ["ingest"]
"#,
    )
}

#[test]
fn bad_items_fail_alone_with_clear_messages_and_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = copy_ddsm(dir.path(), Some(6));
    let p = ddsm_pipeline(dir.path());
    let mut names: Vec<String> = std::fs::read_dir(data.join("images")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let stem = |i: usize| names[i].trim_end_matches(".png").to_string();
    // 0: truncated image; 1: zero-byte image; 2: mask of the wrong size; 3: missing mask; 4: text renamed .png
    let img0 = data.join("images").join(&names[0]);
    let b = std::fs::read(&img0).unwrap();
    std::fs::write(&img0, &b[..b.len() / 3]).unwrap();
    std::fs::write(data.join("images").join(&names[1]), b"").unwrap();
    let small = mammoflow::codec::encode_u8(&mammoflow::npy::Tensor2 { height: 10, width: 10, data: vec![0; 100] });
    std::fs::write(data.join("masks").join(format!("{}_adipose.png", stem(2))), small).unwrap();
    std::fs::remove_file(data.join("masks").join(format!("{}_pectoral.png", stem(3)))).unwrap();
    std::fs::write(data.join("images").join(&names[4]), b"hello, I am not a PNG").unwrap();

    let o = run(&["run", p.to_str().unwrap(), "--json", "--quiet"]);
    assert_eq!(o.status.code(), Some(1), "exit code 1: completed with failed items");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let s = last_json(&stdout);
    assert_eq!((stage(&s, "ingest")["failed"].as_u64(), stage(&s, "ingest")["computed"].as_u64()), (Some(5), Some(6)), "{s}");
    assert_eq!(stage(&s, "crop")["failed"], 5, "descendants of failed items fail too");
    assert_eq!(s["failed"], 10);
    let plain = run(&["run", p.to_str().unwrap(), "--quiet"]);
    assert!(String::from_utf8_lossy(&plain.stdout).contains("10 item(s) failed"));

    let rows = manifest_rows(&dir.path().join("ws"), "ingest");
    let err = |i: usize| rows.iter().find(|r| r.item_id == stem(i)).unwrap().error.clone().unwrap_or_default();
    assert!(err(0).contains(&names[0]) && err(0).contains("truncated or corrupt"), "{}", err(0));
    assert!(err(1).contains(&names[1]), "{}", err(1));
    assert!(err(2).contains("_adipose.png") && err(2).contains("10 x 10") && err(2).contains("480 x 960"), "{}", err(2));
    assert!(err(3).contains("_pectoral.png") && err(3).contains("not found"), "{}", err(3));
    assert!(err(4).contains("not a readable PNG or PGM"), "{}", err(4));
    let ok = rows.iter().find(|r| r.item_id == stem(5)).unwrap();
    assert_eq!((ok.status, ok.error.as_deref()), (Status::Ok, None));
    let crop_rows = manifest_rows(&dir.path().join("ws"), "crop");
    let c0 = crop_rows.iter().find(|r| r.item_id == stem(0)).unwrap();
    assert!(c0.error.as_deref().unwrap().starts_with("upstream item ingest/"), "{c0:?}");

    // failures are cached (same bytes fail the same way); fixing one file recomputes just that item
    let again = run(&["run", p.to_str().unwrap(), "--json", "--quiet"]);
    assert_eq!(last_json(&String::from_utf8_lossy(&again.stdout))["computed"], 0);
    std::fs::copy(data_root().join("ddsm-tissue/images").join(&names[0]), &img0).unwrap();
    let fixed = last_json(&String::from_utf8_lossy(&run(&["run", p.to_str().unwrap(), "--json", "--quiet"]).stdout));
    assert_eq!((fixed["computed"].as_u64(), fixed["failed"].as_u64()), (Some(2), Some(8)), "{fixed}");
    let st = status_json(&p, &[]);
    assert_eq!(st["failed"], 8);
}

#[test]
fn pipeline_errors_name_file_line_column_with_hints() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(dir.path(), "bad.toml", "[pipeline]\nname = \"b\"\n\n[[stage]]\nid = \"g\"\nkind = \"phantom\"\nparams = { cuont = 3 }\n");
    let o = run(&["run", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("bad.toml:7:12") && e.contains("did you mean `count`"), "{e}");
    assert!(!dir.path().join(".mammoflow").exists(), "nothing ran");
    let o = run(&["status", dir.path().join("missing.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.toml"));
    let o = run(&["run", p.to_str().unwrap(), "--set", "nonsense"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--set nonsense"));
}

#[test]
fn a_second_concurrent_run_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let p = phantom_pipeline(dir.path(), 1);
    let _held = mammoflow::store::WorkspaceLock::acquire(&dir.path().join("ws"), "test holder").unwrap();
    let o = run(&["run", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("locked by another run") && e.contains(&format!("pid {}", std::process::id())) && e.contains("test holder"), "{e}");
    // status only reads: it works while a run holds the lock
    status_json(&p, &[]);
}

#[test]
fn a_gathering_stage_leaves_failed_items_out_and_io_errors_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let data = copy_ddsm(dir.path(), Some(4));
    let text = std::fs::read_to_string(ddsm_pipeline(dir.path())).unwrap();
    let p = write_pipeline(dir.path(), "s.toml", &format!("{text}\n[[stage]]\nid = \"split\"\nkind = \"split\"\ninputs = [\"ingest\"]\n"));
    let mut names: Vec<String> = std::fs::read_dir(data.join("images")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    // One image is not a PNG (a lasting failure), and a folder stands where another image should be
    // (an I/O error that a later run may not meet).
    std::fs::write(data.join("images").join(&names[0]), b"not a PNG").unwrap();
    let folder = data.join("images").join(&names[1]);
    let saved = std::fs::read(&folder).unwrap();
    std::fs::remove_file(&folder).unwrap();
    std::fs::create_dir(&folder).unwrap();

    let o = run(&["run", p.to_str().unwrap(), "--json", "--quiet"]);
    let s = last_json(&String::from_utf8_lossy(&o.stdout));
    let split = stage(&s, "split");
    assert_eq!((split["failed"].as_u64(), split["skipped_inputs"].as_u64()), (Some(0), Some(2)), "the split leaves both out: {s}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stem = |i: usize| names[i].trim_end_matches(".png").to_string();
    assert!(stderr.contains(&format!("failed: ingest/{}: ", stem(0))) && stderr.contains("not a readable PNG"), "{stderr}");
    assert!(stderr.contains(&format!("failed: ingest/{}: ", stem(1))) && stderr.contains("transient"), "{stderr}");
    assert!(stderr.contains("split/assignment left out 2 failed input(s)"), "{stderr}");
    let row = &manifest_rows(&dir.path().join("ws"), "split")[0];
    assert_eq!(row.meta["subjects"], mammoflow::stages::MetaValue::Int(2), "the two good images only: {:?}", row.meta);

    // status --failed lists both and the crop of the bad one; the transient one is stale, the others
    // cached failures.
    let f = last_json(&run_ok(&["status", p.to_str().unwrap(), "--failed", "--json"]));
    let failed = f["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 3, "{f}");
    assert_eq!(failed.iter().filter(|x| x["transient"] == true).count(), 1, "{f}");
    let st = status_json(&p, &[]);
    assert_eq!(stage(&st, "ingest")["reasons"], serde_json::json!({"transient failure": 1}), "{st}");

    // The next run retries the transient failure only; once the file is back, the split takes it in.
    let again = last_json(&String::from_utf8_lossy(&run(&["run", p.to_str().unwrap(), "--json", "--quiet"]).stdout));
    assert_eq!(stage(&again, "ingest")["computed"], 1, "{again}");
    std::fs::remove_dir(&folder).unwrap();
    std::fs::write(&folder, saved).unwrap();
    let fixed = last_json(&String::from_utf8_lossy(&run(&["run", p.to_str().unwrap(), "--json", "--quiet"]).stdout));
    assert_eq!((stage(&fixed, "ingest")["computed"].as_u64(), stage(&fixed, "split")["skipped_inputs"].as_u64()), (Some(1), Some(1)), "{fixed}");
    let st = status_json(&p, &[]);
    assert_eq!((st["stale"].as_u64(), stage(&st, "split")["skipped_inputs"].as_u64()), (Some(0), Some(1)), "{st}");

    // on_failed_inputs = "fail": the split fails, naming the bad image.
    let strict = write_pipeline(dir.path(), "f.toml", &format!("{text}\n[[stage]]\nid = \"split\"\nkind = \"split\"\ninputs = [\"ingest\"]\non_failed_inputs = \"fail\"\n"));
    let o = run(&["run", strict.to_str().unwrap(), "--json", "--quiet"]);
    let s = last_json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(stage(&s, "split")["failed"], 1, "{s}");
    let err = manifest_rows(&dir.path().join("ws"), "split")[0].error.clone().unwrap();
    assert!(err.contains(&format!("ingest/{}", stem(0))), "{err}");
    // ... and a stage that gathers nothing refuses the policy.
    let wrong = write_pipeline(dir.path(), "w.toml", &text.replace("inputs = [\"ingest\"]", "inputs = [\"ingest\"]\non_failed_inputs = \"skip\""));
    let o = run(&["status", wrong.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not gather many items"));
}

#[test]
fn hostile_pipeline_files_are_refused_before_any_write() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("pipelines")).unwrap();
    std::os::unix::fs::symlink(dir.path(), project.join("escape")).unwrap();
    let stage = "[[stage]]\nid = \"gen\"\nkind = \"phantom\"\nparams = { count = 1, width = 64, height = 64 }\n";
    let refused = |name: &str, head: &str, needle: &str| {
        let p = write_pipeline(&project.join("pipelines"), name, &format!("{head}\n{stage}"));
        let o = run(&["run", p.to_str().unwrap(), "--quiet"]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(needle), "{name}: expected {needle:?} in {err}");
        err
    };
    for (name, ws) in [("up.toml", "../../.."), ("etc.toml", "/etc/mammoflow"), ("link.toml", "../escape/ws"), ("dots.toml", "../workspaces/../../x")] {
        let e = refused(name, &format!("[pipeline]\nname = \"h\"\nworkspace = \"{ws}\""), "outside the project folder");
        assert!(e.contains("--workspace"), "{e}");
    }
    assert!(!dir.path().join("x").exists() && !std::path::Path::new("/etc/mammoflow").exists());
    let p = write_pipeline(&project.join("pipelines"), "none.toml", "[pipeline]\nname = \"n\"\n");
    let o = run(&["status", p.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no stages"), "{}", String::from_utf8_lossy(&o.stderr));
    refused("name.toml", "[pipeline]\nname = \"../../evil\"", "pipeline name");
    // Inside the project (the shipped layout) is fine, and `--workspace` may point anywhere.
    let ok = write_pipeline(&project.join("pipelines"), "ok.toml", &format!("[pipeline]\nname = \"ok\"\nworkspace = \"../workspaces/ok\"\n{stage}"));
    assert_eq!(run_json(&ok, &[])["failed"], 0);
    let elsewhere = dir.path().join("elsewhere");
    assert_eq!(run_json(&write_pipeline(&project.join("pipelines"), "cli.toml", &format!("[pipeline]\nname = \"c\"\nworkspace = \"/etc/x\"\n{stage}")), &["--workspace", elsewhere.to_str().unwrap()])["failed"], 0);
    assert!(elsewhere.join("manifests/gen.parquet").exists());
}

#[test]
fn hostile_params_and_bombs_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let classes = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/classes-phantom.toml");
    let head = util::labelled_phantom_head("h", 3, "count = 2, width = 96, height = 128");
    let p = write_pipeline(
        dir.path(),
        "h.toml",
        &format!(
            "{head}\n[[stage]]\nid = \"augment\"\nkind = \"augment\"\ninputs = [\"merge\"]\n\n[[stage]]\nid = \"crop\"\nkind = \"balanced-crop\"\ninputs = [\"augment\"]\nparams = {{ classes = \"{}\", sizes = [32] }}\n\n[[stage]]\nid = \"split\"\nkind = \"split\"\ninputs = [\"merge\"]\n",
            classes.display()
        ),
    );
    assert_eq!(run_json(&p, &[])["failed"], 0, "the pipeline itself is fine");
    // Each override is refused before any work, with exit code 2 and the param or op named.
    for (set, needle) in [
        ("augment.recipe=[{ name = \"r\", ops = [{ op = \"rotate\", min_degrees = nan, max_degrees = 5.0 }] }]", "degrees"),
        ("augment.recipe=[{ name = \"r\", ops = [{ op = \"clahe\", tiles = [8, 8], clip = nan }] }]", "clip"),
        ("augment.recipe=[{ name = \"r\", ops = [{ op = \"clahe\", tiles = [99999, 8], clip = 2.0 }] }]", "tiles"),
        ("augment.recipe=[{ name = \"r\", ops = [{ op = \"blur\", sigma = inf }] }]", "sigma"),
        ("split.train=nan", "train"),
        ("split.train=-0.5", "train"),
        ("phantom.count=-1", "count"),
        ("crop.sizes=[0]", "sizes"),
        ("merge.sigma=nan", "sigma"),
    ] {
        let o = run(&["status", p.to_str().unwrap(), "--set", set]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "--set {set} was accepted: {err}");
        assert!(err.contains(needle), "--set {set}: expected {needle:?} in {err}");
    }
    // A 300-byte PNG that declares 100000 x 100000 pixels is refused from its header.
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    // a valid 1 x 1 PNG whose header is then rewritten to declare 100000 x 100000 (CRC fixed)
    let mut png = Vec::new();
    {
        let mut enc = ::png::Encoder::new(&mut png, 1, 1);
        enc.set_color(::png::ColorType::Grayscale);
        enc.set_depth(::png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(&[7]).unwrap();
    }
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(data.join("images/bomb.png"), &png).unwrap();
    let b = write_pipeline(dir.path(), "b.toml", "[pipeline]\nname = \"b\"\nworkspace = \"wsb\"\n[[stage]]\nid = \"ingest\"\nkind = \"ingest-png\"\nparams = { root = \"data\" }\n");
    let o = run(&["run", b.to_str().unwrap(), "--json", "--quiet"]);
    assert_eq!(o.status.code(), Some(1));
    let err = manifest_rows(&dir.path().join("wsb"), "ingest")[0].error.clone().unwrap();
    assert!(err.contains("bomb.png") && err.contains("100000 x 100000") && err.contains("max_pixels"), "{err}");
}

/// CRC-32 (IEEE), as PNG chunks use.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}
