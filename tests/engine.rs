//! Incrementality, determinism and the CLI contract on the generated phantom data.

mod util;

use util::*;

#[test]
fn unchanged_rerun_computes_nothing_and_status_is_all_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let p = phantom_pipeline(dir.path(), 4);
    let first = run_json(&p, &[]);
    assert_eq!((first["computed"].as_u64(), first["cached"].as_u64(), first["failed"].as_u64()), (Some(12), Some(0), Some(0)));
    for s in ["phantom", "ingest", "crop"] {
        let st = stage(&first, s);
        assert_eq!((st["items"].as_u64(), st["computed"].as_u64()), (Some(4), Some(4)), "{st}");
        assert!(st["seconds"].as_f64().is_some());
    }
    let again = run_json(&p, &[]);
    assert_eq!((again["computed"].as_u64(), again["cached"].as_u64()), (Some(0), Some(12)));
    let st = status_json(&p, &[]);
    assert_eq!((st["fresh"].as_u64(), st["stale"].as_u64(), st["failed"].as_u64()), (Some(12), Some(0), Some(0)));
    assert_eq!(stage(&st, "crop")["reasons"], serde_json::json!({}));
}

#[test]
fn param_change_recomputes_that_stage_and_downstream_only() {
    let dir = tempfile::tempdir().unwrap();
    let p = phantom_pipeline(dir.path(), 3);
    run_json(&p, &[]);
    let st = status_json(&p, &["--set", "crop.size=32"]);
    assert_eq!(stage(&st, "crop")["reasons"], serde_json::json!({"params changed": 3}));
    assert_eq!(stage(&st, "ingest")["stale"], 0);
    let r = run_json(&p, &["--set", "crop.size=32"]);
    assert_eq!([stage(&r, "phantom")["computed"].as_u64(), stage(&r, "ingest")["computed"].as_u64(), stage(&r, "crop")["computed"].as_u64()], [Some(0), Some(0), Some(3)]);
    let r = run_json(&p, &["--set", "ingest.regions=[\"nipple\"]", "--set", "crop.size=32"]);
    assert_eq!([stage(&r, "phantom")["computed"].as_u64(), stage(&r, "ingest")["computed"].as_u64(), stage(&r, "crop")["computed"].as_u64()], [Some(0), Some(3), Some(3)]);
    // the pipeline file is never rewritten
    assert!(std::fs::read_to_string(&p).unwrap().contains("size = 64"));
}

#[test]
fn adding_an_item_computes_only_it_and_removing_drops_descendants() {
    let dir = tempfile::tempdir().unwrap();
    let p = phantom_pipeline(dir.path(), 3);
    run_json(&p, &[]);
    let r = run_json(&p, &["--set", "phantom.count=4"]);
    assert_eq!((r["computed"].as_u64(), r["cached"].as_u64()), (Some(3), Some(9)), "{r}");
    let ws = dir.path().join("ws");
    assert_eq!(manifest_rows(&ws, "crop").len(), 4);
    let r = run_json(&p, &["--set", "phantom.count=2"]);
    assert_eq!(r["computed"], 0);
    for s in ["phantom", "ingest", "crop"] {
        let ids: Vec<String> = manifest_rows(&ws, s).into_iter().map(|r| r.item_id).collect();
        assert_eq!(ids, vec!["phantom_0000", "phantom_0001"], "{s}");
    }
}

#[test]
fn one_or_many_workers_write_identical_manifests_and_objects() {
    let dir = tempfile::tempdir().unwrap();
    let p = phantom_pipeline(dir.path(), 6);
    let (a, b) = (dir.path().join("w1"), dir.path().join("w4"));
    run_json(&p, &["--workers", "1", "--workspace", a.to_str().unwrap()]);
    run_json(&p, &["--workers", "4", "--workspace", b.to_str().unwrap()]);
    for s in ["phantom", "ingest", "crop"] {
        assert_eq!(comparable(&a, s), comparable(&b, s), "stage {s}");
    }
    assert_eq!(cas_files(&a), cas_files(&b));
    assert!(!cas_files(&a).is_empty());
}

#[test]
fn until_runs_only_a_stage_and_its_ancestors() {
    let dir = tempfile::tempdir().unwrap();
    let p = phantom_pipeline(dir.path(), 2);
    let r = run_json(&p, &["--until", "ingest"]);
    assert_eq!(r["stages"].as_array().unwrap().len(), 2);
    assert!(!dir.path().join("ws/manifests/crop.parquet").exists());
    let st = status_json(&p, &[]);
    assert_eq!(stage(&st, "crop")["reasons"], serde_json::json!({"new item": 2}));
    let o = run(&["run", p.to_str().unwrap(), "--until", "crpo"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("did you mean `crop`"));
}

#[test]
fn corrupt_or_truncated_objects_are_misses_not_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = phantom_pipeline(dir.path(), 3);
    run_json(&p, &[]);
    let ws = dir.path().join("ws");
    // truncated crop output: the cheap size check sees it
    let crop0 = &manifest_rows(&ws, "crop")[0].outputs[0].file;
    std::fs::write(ws.join(crop0), b"short").unwrap();
    let st = status_json(&p, &[]);
    assert_eq!(stage(&st, "crop")["reasons"], serde_json::json!({"output missing": 1}));
    let r = run_json(&p, &[]);
    assert_eq!(r["computed"], 1);
    // same-size corruption of an ingest image that a stale crop is about to read: found by hashing
    let ing = manifest_rows(&ws, "ingest");
    let obj = ws.join(&ing[1].outputs[0].file);
    let mut bytes = std::fs::read(&obj).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&obj, &bytes).unwrap();
    let r = run_json(&p, &["--set", "crop.size=48"]);
    assert_eq!(stage(&r, "ingest")["computed"], 1, "{r}");
    assert_eq!(stage(&r, "crop")["computed"], 3);
    // missing object
    std::fs::remove_file(ws.join(&manifest_rows(&ws, "phantom")[2].outputs[0].file)).unwrap();
    let r = run_json(&p, &["--set", "crop.size=48"]);
    assert_eq!(stage(&r, "phantom")["computed"], 1, "{r}");
}

#[test]
fn gc_deletes_only_unreferenced_objects() {
    let dir = tempfile::tempdir().unwrap();
    let p = phantom_pipeline(dir.path(), 2);
    run_json(&p, &[]);
    run_json(&p, &["--set", "crop.size=40"]);
    let out = run_ok(&["gc", p.to_str().unwrap(), "--set", "crop.size=40", "--json"]);
    let g = last_json(&out);
    assert!(g["files"].as_u64().unwrap() >= 2 && g["bytes"].as_u64().unwrap() > 0, "{g}");
    assert!(out.contains("freed"));
    let r = run_json(&p, &["--set", "crop.size=40"]);
    assert_eq!(r["computed"], 0, "gc kept everything the manifests use");
}

#[test]
fn dag_prints_text_and_dot() {
    let dir = tempfile::tempdir().unwrap();
    let p = phantom_pipeline(dir.path(), 2);
    let text = run_ok(&["dag", p.to_str().unwrap()]);
    assert!(text.contains("crop") && text.contains("<- ingest"), "{text}");
    let dot = run_ok(&["dag", p.to_str().unwrap(), "--dot"]);
    assert!(dot.starts_with("digraph") && dot.contains("\"phantom\" -> \"ingest\""), "{dot}");
}

#[test]
fn help_covers_every_command() {
    let out = run_ok(&["--help"]);
    for c in ["run", "status", "dag", "gc", "verify", "bench", "export", "report", "predict", "evaluate", "model"] {
        assert!(out.contains(c), "{out}");
        let sub = run_ok(&[c, "--help"]);
        assert!(sub.contains("Usage"), "{sub}");
    }
    let run_help = run_ok(&["run", "--help"]);
    for flag in ["--workspace", "--until", "--set", "--workers", "--json", "--processes", "--process-index", "--hostfile"] {
        assert!(run_help.contains(flag), "{flag} missing from run --help");
    }
}

#[test]
fn unreadable_manifest_or_torn_journal_means_recompute_not_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = phantom_pipeline(dir.path(), 3);
    run_json(&p, &[]);
    let ws = dir.path().join("ws");
    std::fs::write(ws.join("manifests/crop.parquet"), b"not parquet").unwrap();
    std::fs::write(ws.join("journal/ingest.jsonl"), b"{\"item_id\":\"phantom_0000\",\"ke").unwrap();
    let o = run(&["run", p.to_str().unwrap(), "--json", "--quiet"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("crop.parquet"), "a warning names the file");
    let s = last_json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!((stage(&s, "ingest")["computed"].as_u64(), stage(&s, "crop")["computed"].as_u64()), (Some(0), Some(3)), "{s}");
    assert_eq!(manifest_rows(&ws, "crop").len(), 3);
    assert!(!ws.join("journal/ingest.jsonl").exists());
}

#[test]
fn a_poisoned_cache_is_repaired_and_ends_as_a_clean_workspace() {
    // The quickstart's preparation (DICOM phantom -> ingest -> merge -> split / augment -> crops ->
    // contact sheet) on 6 women.
    let dir = tempfile::tempdir().unwrap();
    let p = shipped_pipeline_before(dir.path(), "quickstart", "\n[[stage]]\nid = \"train\"", &["classes-phantom.toml"]);
    let ps = p.to_str().unwrap();
    let small = ["--set", "phantom.count=6"];
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let go = |ws: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["run", ps, "--workspace", ws.to_str().unwrap(), "--json", "--quiet"];
        args.extend_from_slice(&small);
        args.extend_from_slice(extra);
        last_json(&String::from_utf8_lossy(&run(&args).stdout))
    };
    assert_eq!(go(&a, &[])["failed"], 0);
    // One byte flipped in the middle of every ingest object (same size: only hashing can tell).
    for row in manifest_rows(&a, "ingest") {
        for o in &row.outputs {
            let path = a.join(&o.file);
            let mut bytes = std::fs::read(&path).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x5a;
            std::fs::write(&path, bytes).unwrap();
        }
    }
    let sigma = ["--set", "merge.sigma=1.5"];
    let r = go(&a, &sigma);
    assert_eq!((r["failed"].as_u64(), stage(&r, "ingest")["computed"].as_u64()), (Some(0), Some(6)), "every ingest item recomputed, none failed: {r}");
    assert_eq!(go(&a, &sigma)["computed"], 0, "and nothing is left to do");
    // A clean workspace with the same pseudonym key computes the same manifests and objects.
    std::fs::create_dir_all(b.join("state")).unwrap();
    std::fs::copy(a.join("state/subject.key"), b.join("state/subject.key")).unwrap();
    assert_eq!(go(&b, &sigma)["failed"], 0);
    for s in ["phantom", "ingest", "merge", "split", "augment", "crop", "sheet"] {
        let (ra, rb) = (comparable(&a, s), comparable(&b, s));
        assert_eq!(ra, rb, "stage {s}");
        for r in &ra {
            for o in &r.outputs {
                assert!(mammoflow::store::Cas::verify(&a, &o.file), "{s}/{}: {} is corrupt", r.item_id, o.file);
            }
        }
    }
}

/// Every file under `root` with its bytes (empty when `root` does not exist).
fn snapshot(root: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn status_and_dag_write_nothing_and_until_builds_only_what_it_selects() {
    let dir = tempfile::tempdir().unwrap();
    let p = shipped_pipeline_before(dir.path(), "quickstart", "", &["classes-phantom.toml"]);
    let ps = p.to_str().unwrap();
    let ws = dir.path().join("workspaces/quickstart");
    for args in [vec!["status", ps, "--json"], vec!["dag", ps], vec!["status", ps, "--failed"], vec!["status", ps, "--until", "ingest"]] {
        run_ok(&args);
        assert!(!ws.exists(), "`{}` created the workspace", args.join(" "));
    }
    assert_eq!(run_json(&p, &["--until", "ingest", "--set", "phantom.count=3"])["failed"], 0);
    let before = snapshot(&ws);
    assert!(before.iter().any(|(p, _)| p.ends_with("state/subject.key")), "run made the pseudonym key");
    for args in [vec!["status", ps, "--json", "--set", "phantom.count=3"], vec!["dag", ps, "--dot"], vec!["status", ps]] {
        run_ok(&args);
        assert!(snapshot(&ws) == before, "`{}` changed the workspace", args.join(" "));
    }
    // A later stage that cannot be built does not stop `--until` short of it.
    let text = std::fs::read_to_string(&p).unwrap().replace("classes = \"../configs/classes-phantom.toml\"   #", "classes = \"../configs/none.toml\"   #");
    let broken = write_pipeline(&dir.path().join("pipelines"), "broken.toml", &text);
    let o = run(&["status", broken.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "the whole pipeline names the missing table");
    let st = last_json(&run_ok(&["status", broken.to_str().unwrap(), "--until", "ingest", "--json", "--set", "phantom.count=3"]));
    assert_eq!(st["stale"], 0, "{st}");
}

#[test]
fn verify_finds_corrupt_and_missing_objects_and_repairs_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = phantom_pipeline(dir.path(), 3);
    run_json(&p, &[]);
    let ws = dir.path().join("ws");
    let before: Vec<_> = ["phantom", "ingest", "crop"].iter().map(|s| comparable(&ws, s)).collect();
    // a leaf object (a crop nothing reads) corrupted in place, another deleted
    let crops = manifest_rows(&ws, "crop");
    let (a, b) = (ws.join(&crops[0].outputs[0].file), ws.join(&crops[1].outputs[0].file));
    let mut bytes = std::fs::read(&a).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&a, bytes).unwrap();
    std::fs::remove_file(&b).unwrap();
    assert_eq!(status_json(&p, &[])["stale"], 1, "planning sees only the missing one (sizes)");
    let ps = p.to_str().unwrap();
    let o = run(&["verify", ps, "--no-repair", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = last_json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!((v["corrupt"].as_array().unwrap().len(), v["missing"].as_array().unwrap().len()), (1, 1), "{v}");
    assert_eq!(v["corrupt"][0]["item"], crops[0].item_id.as_str());
    let v = last_json(&run_ok(&["verify", ps, "--json"]));
    assert_eq!(v["recomputed"], 2, "{v}");
    let v = last_json(&run_ok(&["verify", ps, "--no-repair", "--json"]));
    assert_eq!((v["corrupt"].as_array().unwrap().len(), v["missing"].as_array().unwrap().len()), (0, 0), "{v}");
    let after: Vec<_> = ["phantom", "ingest", "crop"].iter().map(|s| comparable(&ws, s)).collect();
    assert_eq!(before, after, "the repaired workspace is the one before the damage");
}

#[test]
fn identical_images_under_different_names_keep_their_own_records() {
    // Three byte-identical images: each item keeps its own subject, and reruns find every item fresh
    // (a record of one was once reused for another, with the other's subject, and the choice changed
    // from run to run).
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("data/images");
    std::fs::create_dir_all(&images).unwrap();
    let img = mammoflow::codec::encode_u8(&mammoflow::npy::Tensor2 { height: 8, width: 8, data: (0..64).collect() });
    for name in ["a", "b", "c"] {
        std::fs::write(images.join(format!("{name}.png")), &img).unwrap();
    }
    let p = write_pipeline(
        dir.path(),
        "same.toml",
        "[pipeline]\nname = \"same\"\nworkspace = \"ws\"\n[[stage]]\nid = \"ingest\"\nkind = \"ingest-png\"\nparams = { root = \"data\" }\n\
         [[stage]]\nid = \"crop\"\nkind = \"center-crop\"\ninputs = [\"ingest\"]\nparams = { size = 4 }\n",
    );
    assert_eq!(run_json(&p, &[])["computed"], 6);
    for _ in 0..4 {
        assert_eq!(run_json(&p, &[])["computed"], 0);
    }
    for row in manifest_rows(&dir.path().join("ws"), "ingest") {
        assert_eq!(row.meta["subject"], mammoflow::stages::MetaValue::Str(row.item_id.clone()));
    }
}

#[test]
fn items_stream_across_stages_and_the_barrier_order_writes_the_same_bytes() {
    // Streaming: a crop finishes while ingest still has items to do; the barrier order (kept for `bench
    // stream`) starts no crop before ingest is complete. Both write the same manifests and objects.
    let dir = tempfile::tempdir().unwrap();
    let p = phantom_pipeline(dir.path(), 12);
    let mut reports = Vec::new();
    for (ws, order) in [("streaming", mammoflow::exec::Order::Streaming), ("barrier", mammoflow::exec::Order::Barrier)] {
        let opts = mammoflow::LoadOptions { workspace: Some(dir.path().join(ws)), ..Default::default() };
        let pipeline = mammoflow::Pipeline::load(&p, &opts).unwrap();
        let run = mammoflow::RunOptions {
            until: None,
            cluster: mammoflow::exec::Cluster::Local { workers: 2 },
            retry_failed: false,
            progress: mammoflow::exec::ProgressMode::Quiet,
            command: "test".into(),
            order,
        };
        let r = mammoflow::run(pipeline, &run).unwrap();
        assert_eq!((r.computed, r.failed), (36, 0));
        let at = |id: &str| r.stages.iter().find(|s| s.id == id).unwrap().clone();
        reports.push((at("ingest"), at("crop")));
    }
    let ((ingest, crop), (b_ingest, b_crop)) = (&reports[0], &reports[1]);
    assert!(crop.first_result_s.unwrap() < ingest.finished_s, "streaming: first crop at {:?} s, ingest done at {} s", crop.first_result_s, ingest.finished_s);
    assert!(b_crop.first_result_s.unwrap() >= b_ingest.finished_s, "barrier: first crop at {:?} s, ingest done at {} s", b_crop.first_result_s, b_ingest.finished_s);
    let (a, b) = (dir.path().join("streaming"), dir.path().join("barrier"));
    for s in ["phantom", "ingest", "crop"] {
        assert_eq!(comparable(&a, s), comparable(&b, s), "stage {s}");
    }
    assert_eq!(cas_files(&a), cas_files(&b));
}

/// `run` and `status` without a changed input answer from the stamp the last run left
/// (`state/settled`), reading no manifest: what they report must be exactly what planning in full
/// reports, and any change must make them plan in full.
#[test]
fn the_no_op_shortcut_answers_as_planning_in_full_would_and_steps_aside_on_any_change() {
    let dir = tempfile::tempdir().unwrap();
    let data = copy_ddsm(dir.path(), Some(4));
    let p = write_pipeline(
        dir.path(),
        "s.toml",
        "[pipeline]\nname = \"s\"\nworkspace = \"ws\"\n\n[[stage]]\nid = \"ingest\"\nkind = \"ingest-png\"\n[stage.params]\nroot = \"ddsm-tissue\"\nregions = [\"background\", \"adipose\", \"fibroglandular\", \"pectoral\"]\n\n[[stage]]\nid = \"crop\"\nkind = \"center-crop\"\ninputs = [\"ingest\"]\n",
    );
    let ps = p.to_str().unwrap();
    let mut names: Vec<_> = std::fs::read_dir(data.join("images")).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    std::fs::write(&names[0], b"not a PNG at all").unwrap(); // a cached failure, and its crop's
    let ws = dir.path().join("ws");
    let stamp = ws.join("state/settled");
    let json = |args: &[&str]| last_json(&String::from_utf8_lossy(&run(args).stdout));
    // timings aside, a run's summary
    let untimed = |mut v: serde_json::Value| {
        for s in v["stages"].as_array_mut().unwrap() {
            let o = s.as_object_mut().unwrap();
            o.remove("seconds");
            o.remove("finished_s");
        }
        v
    };
    let first = json(&["run", ps, "--json", "--quiet"]);
    assert_eq!(first["failed"], 2, "{first}");
    assert!(stamp.exists(), "a run whose items all settled leaves the stamp");

    // from the stamp, then planning in full (status never writes the stamp)
    let fast_status = status_json(&p, &[]);
    let fast_failed = json(&["status", ps, "--failed", "--json"]);
    let fast_run = untimed(json(&["run", ps, "--json", "--quiet"]));
    std::fs::remove_file(&stamp).unwrap();
    assert_eq!(status_json(&p, &[]), fast_status);
    assert_eq!(json(&["status", ps, "--failed", "--json"]), fast_failed);
    assert_eq!(fast_failed["failed"].as_array().map(Vec::len), Some(2), "{fast_failed}");
    assert_eq!(untimed(json(&["run", ps, "--json", "--quiet"])), fast_run, "the slow no-op run");
    assert!(stamp.exists(), "planning in full found everything settled and stamped it");
    assert_eq!((fast_run["computed"].as_u64(), fast_run["cached"].as_u64(), fast_run["failed"].as_u64()), (Some(0), Some(8), Some(2)));

    // a source rewritten with other bytes of the same length: its (size, mtime, inode) is not cached
    let mut bytes = std::fs::read(&names[1]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55; // (a corrupt PNG now: a new cached failure)
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&names[1], &bytes).unwrap();
    assert_eq!(stage(&status_json(&p, &[]), "ingest")["reasons"], serde_json::json!({"source changed": 1}));
    run(&["run", ps, "--json", "--quiet"]);
    // a new image
    std::fs::copy(&names[2], data.join("images/zz_new.png")).unwrap();
    for m in std::fs::read_dir(data.join("masks")).unwrap().map(|e| e.unwrap().path()).collect::<Vec<_>>() {
        let stem = names[2].file_stem().unwrap().to_string_lossy().into_owned();
        if let Some(region) = m.file_name().unwrap().to_string_lossy().strip_prefix(&format!("{stem}_")) {
            std::fs::copy(&m, data.join("masks").join(format!("zz_new_{region}"))).unwrap();
        }
    }
    assert_eq!(stage(&status_json(&p, &[]), "ingest")["reasons"], serde_json::json!({"new item": 1}));
    assert_eq!(json(&["run", ps, "--json", "--quiet"])["computed"], 2);
    // another param, another selection
    assert_eq!(stage(&status_json(&p, &["--set", "crop.size=32"]), "crop")["stale"], 5);
    let until = status_json(&p, &["--until", "ingest"]);
    assert_eq!((until["stages"].as_array().map(Vec::len), until["stale"].as_u64()), (Some(1), Some(0)), "{until}");
    assert_eq!(until["fresh"].as_u64().unwrap() + until["failed"].as_u64().unwrap(), 5, "{until}");
    // an object truncated in place (its folder does not change) and one removed (of an image no other
    // shares: zz_new's objects are names[2]'s)
    let own = names[3].file_stem().unwrap().to_string_lossy().into_owned();
    let crop = manifest_rows(&ws, "crop").into_iter().find(|r| r.item_id == own).unwrap();
    std::fs::write(ws.join(&crop.outputs[0].file), b"short").unwrap();
    assert_eq!(stage(&status_json(&p, &[]), "crop")["reasons"], serde_json::json!({"output missing": 1}));
    assert_eq!(json(&["run", ps, "--json", "--quiet"])["computed"], 1);
    let ing = manifest_rows(&ws, "ingest").into_iter().find(|r| r.item_id == own).unwrap();
    std::fs::remove_file(ws.join(&ing.outputs[0].file)).unwrap();
    assert_eq!(stage(&status_json(&p, &[]), "ingest")["reasons"], serde_json::json!({"output missing": 1}));
    run(&["run", ps, "--json", "--quiet"]);
    // a journal left by a killed run
    std::fs::write(ws.join("journal/crop.jsonl"), b"").unwrap();
    assert_eq!(json(&["run", ps, "--json", "--quiet"])["computed"], 0);
    assert!(!ws.join("journal/crop.jsonl").exists(), "planned in full, which ended the journal");
    // cached failures are recomputed on request, not answered from the stamp
    // (two bad images and their crops)
    assert_eq!(json(&["run", ps, "--json", "--quiet", "--retry-failed"])["computed"], 4);
    // and the shortcut still agrees with planning in full after all that
    let fast = status_json(&p, &[]);
    std::fs::remove_file(&stamp).unwrap();
    assert_eq!(status_json(&p, &[]), fast);
}

/// The shortcut is taken (the stamp holds right after a run, for the build that wrote it) and declined
/// once anything it covers changes; the report it gives is the run's own.
#[test]
fn a_settled_run_stamps_and_the_stamp_holds_until_something_changes() {
    let dir = tempfile::tempdir().unwrap();
    let p = phantom_pipeline(dir.path(), 3);
    let load = |set: &[&str]| {
        let opts = mammoflow::LoadOptions { overrides: set.iter().map(|s| s.parse().unwrap()).collect(), ..Default::default() };
        mammoflow::Pipeline::load(&p, &opts).unwrap()
    };
    let opts = mammoflow::RunOptions {
        until: None,
        cluster: mammoflow::exec::Cluster::Local { workers: 1 },
        retry_failed: false,
        progress: mammoflow::exec::ProgressMode::Quiet,
        command: "test".into(),
        order: mammoflow::exec::Order::Streaming,
    };
    let ws = mammoflow::store::Workspace::new(dir.path().join("ws"));
    let check = |pipeline: &mammoflow::Pipeline| {
        let selected = pipeline.selected(None).unwrap();
        mammoflow::plan::settled::check(pipeline, &ws, &selected, false)
    };
    assert!(check(&load(&[])).is_none(), "nothing run yet");
    let first = mammoflow::run(load(&[]), &opts).unwrap();
    assert_eq!(first.computed, 9);
    let settled = check(&load(&[])).expect("a run that ended settled leaves a stamp that holds");
    assert_eq!(settled.stages.iter().map(|s| (s.id.as_str(), s.items, s.failures.len())).collect::<Vec<_>>(), [("phantom", 3, 0), ("ingest", 3, 0), ("crop", 3, 0)]);
    let again = mammoflow::run(load(&[]), &opts).unwrap();
    assert_eq!((again.computed, again.cached), (0, 9));
    assert!(check(&load(&["crop.size=40"])).is_none(), "other params");
    // an object removed: declined, and the run that repairs it stamps again
    let crop0 = manifest_rows(ws.root.as_path(), "crop")[0].outputs[0].file.clone();
    std::fs::remove_file(ws.root.join(&crop0)).unwrap();
    assert!(check(&load(&[])).is_none(), "an object is missing");
    assert_eq!(mammoflow::run(load(&[]), &opts).unwrap().computed, 1);
    assert!(check(&load(&[])).is_some());
    // a manifest rewritten (same rows, new file)
    let m = ws.manifest("ingest");
    let bytes = std::fs::read(&m).unwrap();
    std::fs::remove_file(&m).unwrap();
    std::fs::write(&m, bytes).unwrap();
    assert!(check(&load(&[])).is_none(), "the manifest is another file");
}
