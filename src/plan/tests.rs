//! The planner without disk: a fake environment supplies source hashes and output validity.

use super::*;
use crate::pipeline::{LoadOptions, Override};
use crate::store::OutputRef;
use std::collections::HashSet;
use std::path::Path;

struct FakeEnv {
    hashes: HashMap<PathBuf, String>,
    missing_outputs: HashSet<String>,
}

impl PlanEnv for FakeEnv {
    fn source_hash(&mut self, path: &Path) -> String {
        self.hashes.get(path).cloned().unwrap_or_else(|| "missing".into())
    }
}

impl Objects for FakeEnv {
    fn output_ok(&self, out: &OutputRef) -> bool {
        !self.missing_outputs.contains(&out.file)
    }
    fn object_path(&self, file: &str) -> PathBuf {
        PathBuf::from("/virtual").join(file)
    }
}

const PIPE: &str = r#"
[pipeline]
name = "t"
seed = 3

[[stage]]
id = "gen"
kind = "phantom"
params = { count = 3, width = 64, height = 64 }

[[stage]]
id = "crop"
kind = "center-crop"
inputs = ["gen"]
params = { size = 32 }
"#;

fn pipeline(text: &str, sets: &[&str]) -> Pipeline {
    let overrides: Vec<Override> = sets.iter().map(|s| s.parse().unwrap()).collect();
    Pipeline::parse(Path::new("/virtual/p.toml"), text, &LoadOptions { overrides, workspace: None, until: None }).unwrap()
}

fn env() -> FakeEnv {
    FakeEnv { hashes: HashMap::new(), missing_outputs: HashSet::new() }
}

/// Records as a run of `plan` would have written them: stage by stage, pending items keyed once their
/// upstream stage is done, every computed item ok with one output named after its key.
fn records(p: &Pipeline, plan: &Plan, n_stages: usize) -> Vec<HashMap<String, Record>> {
    let mut plan = plan.clone();
    let mut out: Vec<HashMap<String, Record>> = vec![HashMap::new(); n_stages];
    let objects = env();
    for k in 0..plan.stages.len() {
        let mut made = Vec::new();
        {
            let done = &out;
            let result = |s: usize, item: &str| done[s].get(item);
            for j in 0..plan.stages[k].items.len() {
                plan.settle(p, k, j, &result, &objects);
                let (sp, it) = (&plan.stages[k], &plan.stages[k].items[j]);
                made.push(match &it.state {
                    ItemState::Fresh(r) | ItemState::FreshFailed(r) => r.clone(),
                    ItemState::Stale(_) | ItemState::Pending(_) => Record {
                        item_id: it.id.clone(),
                        key: it.key.clone(),
                        status: Status::Ok,
                        error: None,
                        version: sp.version,
                        params_hash: sp.params_hash.clone(),
                        inputs: it.key_inputs.clone(),
                        outputs: vec![OutputRef { role: "image".into(), file: format!("cas/{}", it.key), size: 1 }],
                        seconds: 0.0,
                        meta: Default::default(),
                    },
                });
            }
        }
        let stage = plan.stages[k].stage;
        out[stage] = made.into_iter().map(|r| (r.item_id.clone(), r)).collect();
    }
    out
}

fn reasons(plan: &Plan, stage: usize) -> Vec<Option<Reason>> {
    plan.stage(stage).unwrap().items.iter().map(|i| i.state.reason()).collect()
}

#[test]
fn first_plan_is_all_new_then_all_fresh() {
    let p = pipeline(PIPE, &[]);
    let sel = vec![true; 2];
    let empty = vec![HashMap::new(); 2];
    let first = plan(&p, &sel, empty, false, &mut env()).unwrap();
    assert_eq!(first.stale(), 6);
    assert!(reasons(&first, 1).iter().all(|r| *r == Some(Reason::NewItem)));
    let again = plan(&p, &sel, records(&p, &first, 2), false, &mut env()).unwrap();
    assert_eq!(again.stale(), 0);
}

#[test]
fn param_change_recomputes_that_stage_only() {
    let p = pipeline(PIPE, &[]);
    let sel = vec![true; 2];
    let first = plan(&p, &sel, vec![HashMap::new(); 2], false, &mut env()).unwrap();
    let known = records(&p, &first, 2);
    let p2 = pipeline(PIPE, &["crop.size=16"]);
    let second = plan(&p2, &sel, known.clone(), false, &mut env()).unwrap();
    assert_eq!(reasons(&second, 0), vec![None, None, None]);
    assert_eq!(reasons(&second, 1), vec![Some(Reason::ParamsChanged); 3]);
    // upstream param (and so every upstream key) changes: downstream says "upstream changed"
    let p3 = pipeline(PIPE, &["gen.bits=12"]);
    let third = plan(&p3, &sel, known.clone(), false, &mut env()).unwrap();
    assert_eq!(reasons(&third, 0), vec![Some(Reason::ParamsChanged); 3]);
    assert_eq!(reasons(&third, 1), vec![Some(Reason::UpstreamChanged); 3]);
}

#[test]
fn added_removed_and_missing_outputs() {
    let p = pipeline(PIPE, &[]);
    let sel = vec![true; 2];
    let first = plan(&p, &sel, vec![HashMap::new(); 2], false, &mut env()).unwrap();
    let known = records(&p, &first, 2);
    let more = pipeline(PIPE, &["gen.count=4"]);
    let grown = plan(&more, &sel, known.clone(), false, &mut env()).unwrap();
    assert_eq!(reasons(&grown, 0), vec![None, None, None, Some(Reason::NewItem)]);
    assert_eq!(grown.stale(), 2, "the new phantom and its crop");
    let fewer = plan(&pipeline(PIPE, &["gen.count=2"]), &sel, known.clone(), false, &mut env()).unwrap();
    assert_eq!((fewer.stale(), fewer.stage(1).unwrap().items.len()), (0, 2), "removed items drop out of downstream stages");
    let mut e = env();
    let victim = known[1]["phantom_0001"].outputs[0].file.clone();
    e.missing_outputs.insert(victim);
    let second = plan(&p, &sel, known.clone(), false, &mut e).unwrap();
    assert_eq!(reasons(&second, 1), vec![None, Some(Reason::OutputMissing), None]);
    assert_eq!(reasons(&second, 0), vec![None, None, None]);
}

#[test]
fn cached_failures_are_fresh_unless_retried() {
    let p = pipeline(PIPE, &[]);
    let sel = vec![true; 2];
    let first = plan(&p, &sel, vec![HashMap::new(); 2], false, &mut env()).unwrap();
    let mut known = records(&p, &first, 2);
    let r = known[1].get_mut("phantom_0000").unwrap();
    r.status = Status::Failed;
    r.outputs.clear();
    let second = plan(&p, &sel, known.clone(), false, &mut env()).unwrap();
    assert_eq!(second.stage(1).unwrap().counts(), (2, 0, 1));
    let retried = plan(&p, &sel, known.clone(), true, &mut env()).unwrap();
    assert_eq!(reasons(&retried, 1)[0], Some(Reason::RetryFailed));
}

#[test]
fn source_change_is_reported_per_item() {
    let dir = std::env::temp_dir().join(format!("mammoflow-plan-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("images")).unwrap();
    for n in ["a", "b"] {
        std::fs::write(dir.join(format!("images/{n}.png")), b"x").unwrap();
    }
    let text = format!(
        "[pipeline]\nname = \"s\"\n[[stage]]\nid = \"ingest\"\nkind = \"ingest-png\"\nparams = {{ root = \"{}\" }}\n[[stage]]\nid = \"crop\"\nkind = \"center-crop\"\ninputs = [\"ingest\"]\n",
        dir.display()
    );
    let p = pipeline(&text, &[]);
    let sel = vec![true; 2];
    let mut e = env();
    e.hashes.insert(dir.join("images/a.png"), "h-a".into());
    e.hashes.insert(dir.join("images/b.png"), "h-b".into());
    let first = plan(&p, &sel, vec![HashMap::new(); 2], false, &mut e).unwrap();
    let known = records(&p, &first, 2);
    e.hashes.insert(dir.join("images/b.png"), "h-b2".into());
    let second = plan(&p, &sel, known.clone(), false, &mut e).unwrap();
    assert_eq!(reasons(&second, 0), vec![None, Some(Reason::SourceChanged)]);
    assert_eq!(reasons(&second, 1), vec![None, Some(Reason::UpstreamChanged)]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_upstream_item_recomputed_to_the_same_result_leaves_its_downstream_fresh() {
    let p = pipeline(PIPE, &[]);
    let sel = vec![true; 2];
    let first = plan(&p, &sel, vec![HashMap::new(); 2], false, &mut env()).unwrap();
    let known = records(&p, &first, 2);
    // A phantom param changes: its items are stale, the crops wait on their results.
    let p2 = pipeline(PIPE, &["gen.bits=12"]);
    let mut second = plan(&p2, &sel, known.clone(), false, &mut env()).unwrap();
    assert!(second.stages[1].items.iter().all(|i| i.state == ItemState::Pending(Reason::UpstreamChanged)), "{:?}", second.stages[1].items[0].state);
    // The phantoms are recomputed; two come out byte for byte as before, one differs.
    let mut redone = known[0].clone();
    for r in redone.values_mut() {
        r.key = format!("new-{}", r.key);
    }
    redone.get_mut("phantom_0002").unwrap().outputs[0].file = "cas/other".into();
    let stage0 = redone.clone();
    let result = |s: usize, item: &str| if s == 0 { stage0.get(item) } else { None };
    for j in 0..3 {
        second.settle(&p2, 1, j, &result, &env());
    }
    let states: Vec<&ItemState> = second.stages[1].items.iter().map(|i| &i.state).collect();
    assert!(matches!(states[0], ItemState::Fresh(_)) && matches!(states[1], ItemState::Fresh(_)), "{states:?}");
    assert_eq!(states[2], &ItemState::Stale(Reason::UpstreamChanged));
}
