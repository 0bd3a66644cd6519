//! Pipeline parsing and validation errors, each with its location and hint.

use super::*;

fn parse(text: &str) -> Result<Pipeline> {
    Pipeline::parse(Path::new("p.toml"), text, &LoadOptions::default())
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

const HEAD: &str = "[pipeline]\nname = \"t\"\n";

#[test]
fn valid_pipeline_is_topologically_ordered() {
    let p = parse(&format!(
        "{HEAD}[[stage]]\nid = \"crop\"\nkind = \"center-crop\"\ninputs = [\"gen\"]\n[[stage]]\nid = \"gen\"\nkind = \"phantom\"\n"
    ))
    .unwrap();
    assert_eq!(p.stages.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec!["gen", "crop"]);
    assert_eq!(p.stages[1].input_idx, vec![0]);
    assert!(p.workspace.ends_with(".mammoflow/t"));
    assert_eq!(p.selected(Some("gen")).unwrap(), vec![true, false]);
    assert!(p.selected(Some("gne")).unwrap_err().to_string().contains("did you mean `gen`"));
}

#[test]
fn unknown_top_level_key_has_location_and_hint() {
    let e = err("[pipeline]\nname = \"t\"\nseeed = 3\n");
    assert!(e.starts_with("p.toml:3:1"), "{e}");
    assert!(e.contains("did you mean `seed`"), "{e}");
}

#[test]
fn unknown_kind_and_missing_input() {
    let e = err(&format!("{HEAD}[[stage]]\nid = \"a\"\nkind = \"phantm\"\n"));
    assert!(e.starts_with("p.toml:5:8") && e.contains("did you mean `phantom`"), "{e}");
    let e = err(&format!("{HEAD}[[stage]]\nid = \"gen\"\nkind = \"phantom\"\n[[stage]]\nid = \"c\"\nkind = \"center-crop\"\ninputs = [\"gne\"]\n"));
    assert!(e.starts_with("p.toml:9:11") && e.contains("did you mean `gen`"), "{e}");
}

#[test]
fn duplicates_and_cycles() {
    let e = err(&format!("{HEAD}[[stage]]\nid = \"a\"\nkind = \"phantom\"\n[[stage]]\nid = \"a\"\nkind = \"phantom\"\n"));
    assert!(e.starts_with("p.toml:7:6") && e.contains("duplicate stage id `a`") && e.contains("line 4"), "{e}");
    let e = err(&format!(
        "{HEAD}[[stage]]\nid = \"a\"\nkind = \"center-crop\"\ninputs = [\"b\"]\n[[stage]]\nid = \"b\"\nkind = \"center-crop\"\ninputs = [\"a\"]\n"
    ));
    assert!(e.contains("cycle") && e.contains("a -> b") || e.contains("b -> a"), "{e}");
}

#[test]
fn param_errors_point_at_the_param() {
    let e = err(&format!("{HEAD}[[stage]]\nid = \"gen\"\nkind = \"phantom\"\n[stage.params]\ncount = 3\ncuont = 4\n"));
    assert!(e.starts_with("p.toml:8:1") && e.contains("did you mean `count`"), "{e}");
    let e = err(&format!("{HEAD}[[stage]]\nid = \"gen\"\nkind = \"phantom\"\nparams = {{ count = \"many\" }}\n"));
    assert!(e.starts_with("p.toml:6:") && e.contains("count"), "{e}");
    let e = err(&format!("{HEAD}[[stage]]\nid = \"gen\"\nkind = \"phantom\"\nparams = {{ bits = 20 }}\n"));
    assert!(e.contains("bits must be 12 to 16"), "{e}");
    let e = err(&format!("{HEAD}[[stage]]\nid = \"gen\"\nkind = \"phantom\"\ninputs = []\n[[stage]]\nid = \"c\"\nkind = \"center-crop\"\n"));
    assert!(e.contains("exactly one input stage"), "{e}");
}

#[test]
fn overrides_apply_and_are_checked() {
    let text = format!("{HEAD}[[stage]]\nid = \"gen\"\nkind = \"phantom\"\n");
    let o = |s: &str| LoadOptions { overrides: vec![s.parse().unwrap()], workspace: None, until: None };
    let p = Pipeline::parse(Path::new("p.toml"), &text, &o("gen.count=5")).unwrap();
    assert_eq!(p.stages[0].params["count"].as_integer(), Some(5));
    let e = Pipeline::parse(Path::new("p.toml"), &text, &o("gne.count=5")).unwrap_err().to_string();
    assert!(e.contains("did you mean `gen`"), "{e}");
    let e = Pipeline::parse(Path::new("p.toml"), &text, &o("gen.count=lots")).unwrap_err().to_string();
    assert!(e.starts_with("--set gen.count=lots"), "{e}");
}
