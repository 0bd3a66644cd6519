//! Multi-process mode: two processes on 127.0.0.1 (timely's own networking) produce exactly what one
//! process does.

mod util;

use std::net::TcpListener;
use std::process::Stdio;

use util::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn two_processes_match_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = phantom_pipeline(dir.path(), 8);
    let ps = p.to_str().unwrap();
    let single = dir.path().join("single");
    run_json(&p, &["--workspace", single.to_str().unwrap(), "--workers", "1"]);

    let hosts = dir.path().join("hosts.txt");
    std::fs::write(&hosts, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).unwrap();
    let cluster = dir.path().join("cluster");
    let cws = cluster.to_str().unwrap();
    let hs = hosts.to_str().unwrap();
    let spawn = |i: &str| {
        cmd(&["run", ps, "--workspace", cws, "--workers", "1", "--processes", "2", "--process-index", i, "--hostfile", hs, "--json", "--quiet"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let p1 = spawn("1");
    let p0 = spawn("0");
    let o0 = p0.wait_with_output().unwrap();
    let o1 = p1.wait_with_output().unwrap();
    assert!(o0.status.success() && o1.status.success(), "{}\n{}", String::from_utf8_lossy(&o0.stderr), String::from_utf8_lossy(&o1.stderr));
    let s = last_json(&String::from_utf8_lossy(&o0.stdout));
    assert_eq!(s["computed"], 24, "{s}");
    for st in ["phantom", "ingest", "crop"] {
        assert_eq!(comparable(&single, st), comparable(&cluster, st), "stage {st}");
    }
    assert_eq!(cas_files(&single), cas_files(&cluster));
}

#[test]
fn a_process_started_with_other_params_is_refused_not_obeyed() {
    let dir = tempfile::tempdir().unwrap();
    let p = phantom_pipeline(dir.path(), 4);
    let ps = p.to_str().unwrap();
    let hosts = dir.path().join("hosts.txt");
    std::fs::write(&hosts, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).unwrap();
    let ws = dir.path().join("ws");
    let (wss, hs) = (ws.to_str().unwrap(), hosts.to_str().unwrap());
    let spawn = |i: &str, extra: &[&str]| {
        let mut args = vec!["run", ps, "--workspace", wss, "--workers", "1", "--processes", "2", "--process-index", i, "--hostfile", hs, "--quiet"];
        args.extend_from_slice(extra);
        cmd(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    };
    let mut p1 = spawn("1", &["--set", "crop.size=48"]);
    let mut p0 = spawn("0", &[]);
    // Both stop on their own, quickly, naming the mismatch.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while p0.try_wait().unwrap().is_none() || p1.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = p0.kill();
            let _ = p1.kill();
            panic!("a process with other params hung the cluster");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for (name, child) in [("driver", p0), ("worker", p1)] {
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains("runs another pipeline, --set, --until, workspace or version"), "{name}: {err}");
    }
    assert!(!ws.join("manifests/crop.parquet").exists(), "nothing was computed");
}
