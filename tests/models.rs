//! `mammoflow model summary`: the CLI contract (`--json` last line) and the paper's figures.

mod util;

use util::*;

#[test]
fn summary_json_reports_parameters_and_shapes() {
    // Width 1/16: the spatial shapes are the full-size network's, the run is cheap.
    let out = run_ok(&["model", "summary", "unet", "--width", "0.0625", "--json"]);
    assert!(out.contains("output        1 x 2 x 388 x 388"), "{out}");
    let j = last_json(&out);
    assert_eq!(j["model"], "unet");
    assert_eq!(j["input"], serde_json::json!([572, 572]));
    assert_eq!(j["output"], serde_json::json!([1, 2, 388, 388]));
    assert!(j["params"].as_u64().unwrap() > 100_000);
    assert_eq!(j["params"], j["trainable_params"]);

    let j = last_json(&run_ok(&["model", "summary", "deeplabv3", "--width", "0.0625", "--input", "769", "769", "--classes", "4", "--json"]));
    assert_eq!(j["output"], serde_json::json!([1, 4, 769, 769]));
    assert_eq!(j["output_stride"], 8);
    let maps = j["maps"].as_array().unwrap();
    let before = maps.iter().find(|m| m[0] == "features before ASPP").expect("features before ASPP");
    assert_eq!(before[1][2], 97);
    assert_eq!(before[1][3], 97);

    let j = last_json(&run_ok(&["model", "summary", "dilation10-context", "--width", "0.0625", "--json"]));
    assert_eq!(j["output_stride"], 8);
    assert!(j["trainable_params"].as_u64().unwrap() < j["params"].as_u64().unwrap());
}

#[test]
fn summary_refuses_bad_names_and_sizes_clearly() {
    let o = run(&["model", "summary", "fcn-9s"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("unknown model") && e.contains("did you mean fcn8"), "{e}");
    let o = run(&["model", "summary", "unet", "--width", "0.0625", "--input", "256", "256"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("252") && e.contains("268"), "{e}");
    let o = run(&["model", "summary", "fcn8", "--device", "tpu"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cpu, cuda:N or auto"));
}
