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
