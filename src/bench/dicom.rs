//! `bench dicom`: the full DICOM pixel pipeline per file, single thread, against pydicom + pylibjpeg
//! (`../shared/peers/pydicom_ingest.py`, same files, same run); and peak memory of ingesting 20 vs 200
//! full-field mammograms (the CBIS-DDSM MG files cycled), which must not grow with N.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;

use super::{peers_dir, peers_python, BenchOptions, Report, Row};
use crate::dicom::{decode_path, DecodeOptions, VoiChoice};

const FILES: &[&str] = &[
    "dicom/mg-cbis-ddsm/P_00820_LEFT_CC.dcm",
    "dicom/mg-cbis-ddsm/P_00820_LEFT_MLO.dcm",
    "dicom/non-mg/RG3_J2KR.dcm",
    "dicom/mg-nema-wg04/MG1_J2KI.dcm",
    "dicom/non-mg/RG3_JPLL.dcm",
    "dicom/non-mg/RG3_JLSL.dcm",
];

fn datasets() -> PathBuf {
    std::env::var_os("MAMMOFLOW_DATA").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets"))
}

/// Median ms of read + decode + pixel pipeline over 5 runs after one warm-up, and megapixels.
fn ours(path: &Path) -> anyhow::Result<(f64, f64)> {
    let opts = DecodeOptions { voi: VoiChoice::Window, max_pixels: u64::MAX };
    let key = [0u8; 32];
    let d = decode_path(path, opts, &key).with_context(|| format!("decoding {}", path.display()))?;
    let mp = (d.image.width * d.image.height) as f64 / 1e6;
    drop(d);
    let mut ms: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let d = decode_path(path, opts, &key);
            let e = t.elapsed().as_secs_f64() * 1000.0;
            drop(d);
            e
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    Ok((ms[2], mp))
}

fn peer(files: &[&str], notes: &mut Vec<String>) -> Vec<Option<serde_json::Value>> {
    let Some(py) = peers_python() else {
        notes.push("peer: set MAMMOFLOW_PEERS_PYTHON to a venv python with pydicom, pylibjpeg(-libjpeg, -openjpeg, -rle) and opencv to measure pydicom side by side".into());
        return vec![None; files.len()];
    };
    let out = Command::new(&py).arg(peers_dir().join("pydicom_ingest.py")).arg(datasets()).arg("--files").args(files).output();
    let lines: Vec<serde_json::Value> = match out {
        Ok(o) => {
            if !o.status.success() {
                notes.push(format!("peer failed: {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")));
            }
            String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
        }
        Err(e) => {
            notes.push(format!("peer: cannot run {}: {e}", py.display()));
            Vec::new()
        }
    };
    files.iter().map(|f| lines.iter().find(|v| v["file"] == *f).cloned()).collect()
}

/// Peak RSS (MiB) of a `mammoflow run` ingesting `n` MG files (cycled) with one worker.
fn peak_rss(n: usize, dir: &Path) -> anyhow::Result<(f64, f64)> {
    let data = dir.join(format!("data{n}"));
    std::fs::create_dir_all(&data)?;
    let src = [datasets().join(FILES[0]), datasets().join(FILES[1])];
    for i in 0..n {
        std::os::unix::fs::symlink(&src[i % 2], data.join(format!("mg_{i:04}.dcm")))?;
    }
    let pipe = dir.join(format!("mem{n}.toml"));
    std::fs::write(&pipe, format!("[pipeline]\nname = \"mem\"\nworkspace = \"ws{n}\"\n[[stage]]\nid = \"ingest\"\nkind = \"ingest-dicom\"\nparams = {{ root = \"{}\" }}\n", data.display()))?;
    let t = Instant::now();
    let child = Command::new(std::env::current_exe()?).args(["run", &pipe.to_string_lossy(), "--workers", "1", "--quiet"]).stdout(std::process::Stdio::null()).spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data, filled by the kernel for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    anyhow::ensure!(rc == pid, "wait4 failed");
    anyhow::ensure!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the ingest run failed (status {status})");
    Ok((usage.ru_maxrss as f64 / 1024.0, t.elapsed().as_secs_f64()))
}

/// Runs the benchmark.
pub fn run(opts: &BenchOptions) -> anyhow::Result<Report> {
    let root = datasets();
    anyhow::ensure!(root.join(FILES[0]).is_file(), "DICOM files not found under {} (set MAMMOFLOW_DATA)", root.display());
    let mut notes = vec!["ours: read + decode + Modality/VOI/inversion to 16 bits, one thread, median of 5 after a warm-up; peer: pydicom dcmread + pixel_array + apply_modality_lut + apply_voi_lut + float32 [0, 1] + inversion, same protocol".into()];
    let peer_rows = if opts.no_peer { vec![None; FILES.len()] } else { peer(FILES, &mut notes) };
    let mut rows = Vec::new();
    for (f, p) in FILES.iter().zip(peer_rows) {
        let name = Path::new(f).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let (ms, mp) = ours(&root.join(f))?;
        let pms = p.as_ref().and_then(|v| v["decode_process_ms"].as_f64());
        rows.push(Row::time(&format!("{name} per file"), "ms", ms, pms));
        let rate = mp / (ms / 1000.0);
        let prate = pms.map(|p| mp / (p / 1000.0));
        rows.push(Row { case: format!("{name} throughput"), unit: "MP/s".into(), ours: rate, peer: prate, speedup: prate.map(|p| rate / p), ..Default::default() });
    }
    let n = opts.items.unwrap_or(200);
    let dir = std::env::temp_dir().join(format!("mammoflow-bench-dicom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let small = (n / 10).max(2);
    let (rss_small, t_small) = peak_rss(small, &dir)?;
    let (rss_big, t_big) = peak_rss(n, &dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    rows.push(Row { case: format!("peak RSS, {small} MG files"), unit: "MiB".into(), ours: rss_small, peer: None, speedup: None, ..Default::default() });
    rows.push(Row { case: format!("peak RSS, {n} MG files"), unit: "MiB".into(), ours: rss_big, peer: None, speedup: None, ..Default::default() });
    notes.push(format!("memory: ingesting {small} then {n} full-field MG files (12 MP each, cycled) with one worker took {t_small:.1} s and {t_big:.1} s; peak RSS {rss_small:.0} vs {rss_big:.0} MiB (flat = does not grow with N)"));
    Ok(Report { bench: "dicom".into(), rows, notes })
}
