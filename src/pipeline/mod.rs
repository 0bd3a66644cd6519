//! Pipeline definitions: the TOML file a user writes, parsed and validated before anything runs.
//!
//! ```toml
//! [pipeline]
//! name = "quickstart"
//! workspace = "../workspaces/quickstart"   # relative to this file unless absolute
//! seed = 7
//!
//! [[stage]]
//! id = "phantom"
//! kind = "phantom"
//! params = { count = 24 }
//!
//! [[stage]]
//! id = "ingest"
//! kind = "ingest-png"
//! inputs = ["phantom"]
//! ```
//!
//! Every error (unknown key, unknown kind, bad param type, missing upstream, duplicate id, cycle) names
//! `file:line:column` and, where a near name exists, a `did you mean` hint. The file is never rewritten:
//! command-line overrides (`--set stage.param=value`) are applied to the parsed tables only.

mod overrides;
mod span;

pub use crate::suggest::did_you_mean;
pub use crate::vars::{default_data_root, expand_vars};
pub use overrides::Override;
use span::{locate_key, Located};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, IoContext, Result};
use crate::stages::{self, BuildCtx, Stage};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    pipeline: RawPipeline,
    #[serde(default, rename = "stage")]
    stages: Vec<RawStage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    workspace: Option<String>,
    #[serde(default)]
    seed: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    id: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    inputs: Vec<Spanned<String>>,
    #[serde(default)]
    params: Option<Spanned<toml::Table>>,
    #[serde(default)]
    on_failed_inputs: Option<Spanned<String>>,
}

/// One stage as declared, with its built implementation.
#[derive(Clone)]
pub struct StageDef {
    /// The stage id (unique in the pipeline).
    pub id: String,
    /// The stage kind (`phantom`, `ingest-png`, ...).
    pub kind: String,
    /// Upstream stage ids, as declared.
    pub inputs: Vec<String>,
    /// Indices of `inputs` in [`Pipeline::stages`].
    pub input_idx: Vec<usize>,
    /// The params after overrides (before `${VAR}` expansion).
    pub params: toml::Table,
    /// The built stage.
    pub stage: Arc<dyn Stage>,
    /// What a stage that gathers many items does with the failed ones.
    pub on_failed_inputs: FailedInputs,
}

/// `on_failed_inputs`: what a stage that reads many items (split, contact-sheet, train, export) does when
/// some of them failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailedInputs {
    /// Leave them out, count and name them in the item's record (`skipped_inputs`, `skipped`), warn.
    #[default]
    Skip,
    /// Fail the item, naming the first failed input.
    Fail,
}

impl StageDef {
    /// What the study's tables (and a stage reporting on others) know of this stage.
    pub fn stage_ref(&self) -> crate::export::StageRef {
        crate::export::StageRef { id: self.id.clone(), kind: self.kind.clone(), inputs: self.inputs.clone(), params: self.stage.params() }
    }
    /// What the key hashes as the stage's params: its canonical params, and the failed-inputs policy
    /// of a stage that gathers (skipping changes its result).
    pub fn params_value(&self) -> serde_json::Value {
        let params = self.stage.params();
        if (0..self.inputs.len()).any(|i| self.stage.gathers(i)) {
            serde_json::json!({ "params": params, "on_failed_inputs": self.on_failed_inputs })
        } else {
            params
        }
    }
}

impl std::fmt::Debug for StageDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageDef").field("id", &self.id).field("kind", &self.kind).field("inputs", &self.inputs).finish()
    }
}

/// A parsed, validated pipeline. Stages are stored in a topological order (file order where possible).
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The pipeline file.
    pub path: PathBuf,
    /// `[pipeline] name`.
    pub name: String,
    /// `[pipeline] description`.
    pub description: Option<String>,
    /// The workspace (cache) directory, resolved.
    pub workspace: PathBuf,
    /// The pipeline seed.
    pub seed: u64,
    /// Stages in topological order.
    pub stages: Vec<StageDef>,
    /// What the processes of a cluster must agree on: the file's text, the `--set`s, `--until`, the
    /// workspace (resolved) and the program version, hashed.
    pub fingerprint: String,
}

/// How to load a pipeline: overrides and the workspace override from the command line.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--set stage.param=value`, in order.
    pub overrides: Vec<Override>,
    /// `--workspace DIR`.
    pub workspace: Option<PathBuf>,
    /// `--until STAGE`: only STAGE and its ancestors are built (the rest of the file is checked for
    /// syntax, ids and inputs, not for params).
    pub until: Option<String>,
}

impl Pipeline {
    /// Every stage as the study's tables see it.
    pub fn stage_refs(&self) -> Vec<crate::export::StageRef> {
        self.stages.iter().map(StageDef::stage_ref).collect()
    }

    /// The source of the study's tables over every evaluate stage; `refs` is [`Pipeline::stage_refs`].
    pub fn tables_source<'a>(&'a self, refs: &'a [crate::export::StageRef]) -> crate::export::Source<'a> {
        crate::export::Source { name: &self.name, path: &self.path, workspace: &self.workspace, stages: refs, evals: None }
    }

    /// Reads, parses and validates a pipeline file.
    ///
    /// # Errors
    /// [`Error::Pipeline`] with `file:line:column` for every problem in the file, [`Error::Override`] for a
    /// bad `--set`, [`Error::Io`] if the file cannot be read.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path).at("read pipeline", path)?;
        Self::parse(path, &text, opts)
    }

    /// Parses pipeline text; `path` is used for messages and to resolve relative paths.
    pub fn parse(path: &Path, text: &str, opts: &LoadOptions) -> Result<Pipeline> {
        let loc = Located { file: path, text };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let (message, hint) = unknown_field_hint(e.message());
            loc.error(e.span().map(|s| s.start).unwrap_or(0), message, hint)
        })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let base_dir = if base_dir.as_os_str().is_empty() { PathBuf::from(".") } else { base_dir };

        // ids: unique, well-formed
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, s) in raw.stages.iter().enumerate() {
            let id = s.id.get_ref();
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(loc.error(s.id.span().start, format!("stage id `{id}` must be non-empty and use only letters, digits, `-` and `_`"), None));
            }
            if let Some(&j) = index.get(id) {
                let (l, c) = loc.line_col(raw.stages[j].id.span().start);
                return Err(loc.error(s.id.span().start, format!("duplicate stage id `{id}` (first defined at line {l}, column {c})"), None));
            }
            index.insert(id.clone(), i);
        }

        // kinds and inputs
        for s in &raw.stages {
            let kind = s.kind.get_ref();
            if !stages::KINDS.contains(&kind.as_str()) {
                return Err(loc.error(
                    s.kind.span().start,
                    format!("unknown stage kind `{kind}` (known kinds: {})", stages::KINDS.join(", ")),
                    did_you_mean(kind, stages::KINDS.iter().copied()).map(|h| format!("did you mean `{h}`?")),
                ));
            }
            for inp in &s.inputs {
                if !index.contains_key(inp.get_ref()) {
                    return Err(loc.error(
                        inp.span().start,
                        format!("stage `{}` takes input from `{}`, which is not a stage of this pipeline", s.id.get_ref(), inp.get_ref()),
                        did_you_mean(inp.get_ref(), index.keys().map(String::as_str)).map(|h| format!("did you mean `{h}`?")),
                    ));
                }
            }
        }

        let order = topo_order(&raw.stages, &index).map_err(|cycle| {
            let first = &raw.stages[cycle[0]];
            let names: Vec<&str> = cycle.iter().map(|&i| raw.stages[i].id.get_ref().as_str()).collect();
            loc.error(first.id.span().start, format!("stages form a cycle: {} -> {}", names.join(" -> "), names[0]), None)
        })?;

        // params tables with overrides
        let mut tables: Vec<toml::Table> =
            raw.stages.iter().map(|s| s.params.as_ref().map(|p| p.get_ref().clone()).unwrap_or_default()).collect();
        for o in &opts.overrides {
            let Some(&i) = index.get(&o.stage) else {
                return Err(Error::Override {
                    spec: o.spec.clone(),
                    message: format!(
                        "no stage `{}`{}",
                        o.stage,
                        did_you_mean(&o.stage, index.keys().map(String::as_str)).map(|h| format!(" (did you mean `{h}`?)")).unwrap_or_default()
                    ),
                });
            };
            o.apply(&mut tables[i])?;
        }

        if raw.stages.is_empty() {
            return Err(loc.error(0, "the pipeline has no stages (add [[stage]] tables)", None));
        }
        let workspace = match (&opts.workspace, &raw.pipeline.workspace) {
            (Some(w), _) => w.clone(),
            (None, Some(w)) => {
                let w = expand_vars(w, path).map_err(|m| loc.error(0, m, None))?;
                let w = PathBuf::from(w);
                let w = if w.is_absolute() { w } else { base_dir.join(w) };
                let project = project_folder(&base_dir);
                if !resolve(&w).starts_with(resolve(&project)) {
                    let at = text.find("workspace").unwrap_or(0);
                    return Err(loc.error(
                        at,
                        format!("workspace {} lies outside the project folder {} (symbolic links resolved)", w.display(), project.display()),
                        Some("put it inside the project, or give `--workspace DIR` on the command line".into()),
                    ));
                }
                w
            }
            (None, None) => base_dir.join(".mammoflow").join(&raw.pipeline.name),
        };
        if raw.pipeline.name.is_empty() || !raw.pipeline.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') || raw.pipeline.name.starts_with('.') {
            return Err(loc.error(text.find("name").unwrap_or(0), format!("pipeline name `{}` must use only letters, digits, `-`, `_` and `.`, and not start with `.`", raw.pipeline.name), None));
        }

        // `--until STAGE`: build STAGE and its ancestors only
        let order = match &opts.until {
            None => order,
            Some(u) => {
                let Some(&target) = index.get(u) else {
                    return Err(Error::UnknownStage { id: u.clone(), hint: did_you_mean(u, raw.stages.iter().map(|s| s.id.get_ref().as_str())).map(str::to_string) });
                };
                let mut keep = vec![false; raw.stages.len()];
                let mut stack = vec![target];
                while let Some(i) = stack.pop() {
                    if !std::mem::replace(&mut keep[i], true) {
                        stack.extend(raw.stages[i].inputs.iter().map(|x| index[x.get_ref()]));
                    }
                }
                order.into_iter().filter(|&i| keep[i]).collect()
            }
        };

        // build stages in topological order
        let mut pos_of: HashMap<usize, usize> = HashMap::new();
        for (p, &i) in order.iter().enumerate() {
            pos_of.insert(i, p);
        }
        let mut stages_out = Vec::with_capacity(order.len());
        let mut refs: Vec<crate::export::StageRef> = Vec::with_capacity(order.len());
        for &i in &order {
            let s = &raw.stages[i];
            let inputs: Vec<String> = s.inputs.iter().map(|x| x.get_ref().clone()).collect();
            let ctx = BuildCtx {
                stage_id: s.id.get_ref(),
                pipeline_file: path,
                pipeline_name: &raw.pipeline.name,
                base_dir: &base_dir,
                seed: raw.pipeline.seed,
                workspace: &workspace,
                inputs: &inputs,
                earlier: &refs,
            };
            // `on_failed_inputs` may sit beside `inputs` or among the params.
            let policy_at = s.on_failed_inputs.as_ref().map(|p| p.span().start).or_else(|| s.params.as_ref().map(|p| p.span().start)).unwrap_or(s.kind.span().start);
            let policy = match (tables[i].remove("on_failed_inputs"), &s.on_failed_inputs) {
                (Some(_), Some(_)) => return Err(loc.error(policy_at, format!("stage `{}`: `on_failed_inputs` is given twice (beside `inputs` and in params)", s.id.get_ref()), None)),
                (Some(toml::Value::String(v)), None) => Some(v),
                (Some(other), None) => return Err(loc.error(policy_at, format!("stage `{}`: `on_failed_inputs` must be \"skip\" or \"fail\", got {other}", s.id.get_ref()), None)),
                (None, Some(v)) => Some(v.get_ref().clone()),
                (None, None) => None,
            };
            let on_failed_inputs = match policy.as_deref() {
                None | Some("skip") => FailedInputs::Skip,
                Some("fail") => FailedInputs::Fail,
                Some(other) => return Err(loc.error(policy_at, format!("stage `{}`: `on_failed_inputs` must be \"skip\" or \"fail\", got \"{other}\"", s.id.get_ref()), None)),
            };
            let built = stages::build(s.kind.get_ref(), &tables[i], &ctx).map_err(|e| {
                let overridden = opts.overrides.iter().find(|o| o.stage == *s.id.get_ref() && e.key.as_deref().is_some_and(|k| o.key_path.first().map(String::as_str) == Some(k)));
                if let Some(o) = overridden {
                    return Error::Override { spec: o.spec.clone(), message: e.message.clone() };
                }
                let region_start = s.id.span().start;
                let region_end = raw.stages.get(i + 1).map(|n| n.id.span().start).unwrap_or(text.len());
                let at = e
                    .key
                    .as_deref()
                    .and_then(|k| locate_key(text, region_start, region_end, s.params.as_ref().map(|p| p.span().start), k))
                    .or_else(|| s.params.as_ref().map(|p| p.span().start))
                    .unwrap_or(s.kind.span().start);
                let hint = e.hint.clone();
                loc.error(at, format!("stage `{}` ({}): {}", s.id.get_ref(), s.kind.get_ref(), e.message), hint)
            })?;
            stages_out.push(StageDef {
                id: s.id.get_ref().clone(),
                kind: s.kind.get_ref().clone(),
                inputs: s.inputs.iter().map(|x| x.get_ref().clone()).collect(),
                input_idx: s.inputs.iter().map(|x| pos_of[&index[x.get_ref()]]).collect(),
                params: tables[i].clone(),
                stage: built,
                on_failed_inputs,
            });
            let sd = stages_out.last().expect("pushed");
            refs.push(sd.stage_ref());
            if policy.is_some() && !(0..sd.inputs.len()).any(|k| sd.stage.gathers(k)) {
                return Err(loc.error(policy_at, format!("stage `{}` ({}) does not gather many items: `on_failed_inputs` applies to split, contact-sheet, train and export", sd.id, sd.kind), None));
            }
        }
        for (p, sd) in stages_out.iter().enumerate() {
            let arity = sd.stage.arity();
            if !arity.accepts(sd.inputs.len()) {
                let s = &raw.stages[order[p]];
                return Err(loc.error(s.kind.span().start, format!("stage `{}` ({}) takes {}, got {}", sd.id, sd.kind, arity.describe(), sd.inputs.len()), None));
            }
        }

        let fingerprint = {
            let mut h = blake3::Hasher::new();
            for part in [text, &opts.overrides.iter().map(|o| o.spec.as_str()).collect::<Vec<_>>().join("\0"), opts.until.as_deref().unwrap_or(""), &resolve(&workspace).to_string_lossy(), env!("CARGO_PKG_VERSION")] {
                h.update(part.as_bytes());
                h.update(&[0xff]);
            }
            h.finalize().to_hex()[..16].to_string()
        };
        Ok(Pipeline {
            path: path.to_path_buf(),
            name: raw.pipeline.name,
            description: raw.pipeline.description,
            workspace,
            seed: raw.pipeline.seed,
            stages: stages_out,
            fingerprint,
        })
    }

    /// Index of the stage `id` in [`Pipeline::stages`].
    pub fn stage_index(&self, id: &str) -> Result<usize> {
        self.stages.iter().position(|s| s.id == id).ok_or_else(|| Error::UnknownStage {
            id: id.to_string(),
            hint: did_you_mean(id, self.stages.iter().map(|s| s.id.as_str())).map(str::to_string),
        })
    }

    /// The stages to consider: all, or (with `--until STAGE`) STAGE and everything it depends on.
    pub fn selected(&self, until: Option<&str>) -> Result<Vec<bool>> {
        let mut sel = vec![until.is_none(); self.stages.len()];
        if let Some(u) = until {
            let mut stack = vec![self.stage_index(u)?];
            while let Some(i) = stack.pop() {
                if !sel[i] {
                    sel[i] = true;
                    stack.extend(self.stages[i].input_idx.iter().copied());
                }
            }
        }
        Ok(sel)
    }

}

/// The folder a pipeline's own paths must stay in: the pipeline file's folder, or its parent when that
/// folder is called `pipelines` (the layout `project/pipelines/*.toml`, `project/workspaces/`).
fn project_folder(base_dir: &Path) -> PathBuf {
    let abs = resolve(base_dir);
    match abs.file_name() {
        Some(n) if n == "pipelines" => abs.parent().map(Path::to_path_buf).unwrap_or(abs),
        _ => abs,
    }
}

/// A path with every symbolic link resolved and `.` / `..` applied component by component (so
/// `link/..` goes where the link's target's parent is), whether or not its end exists yet: a path that
/// does not exist is judged by where it would be created.
fn resolve(path: &Path) -> PathBuf {
    use std::path::Component;
    let abs = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(path) };
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => out = PathBuf::from("/"),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                if let Ok(real) = out.canonicalize() {
                    out = real;
                }
            }
        }
    }
    out
}

/// Kahn's algorithm, stable in file order. `Err` carries one cycle (stage indices).
fn topo_order(stages: &[RawStage], index: &HashMap<String, usize>) -> std::result::Result<Vec<usize>, Vec<usize>> {
    let n = stages.len();
    let deps: Vec<Vec<usize>> = stages.iter().map(|s| s.inputs.iter().map(|i| index[i.get_ref()]).collect()).collect();
    let mut done = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = (0..n).find(|&i| !done[i] && deps[i].iter().all(|&d| done[d]));
        match next {
            Some(i) => {
                done[i] = true;
                order.push(i);
            }
            None => {
                // walk back from any unfinished stage until a stage repeats: that is a cycle
                let mut seen = Vec::new();
                let mut cur = (0..n).find(|&i| !done[i]).expect("some stage is unfinished");
                loop {
                    if let Some(p) = seen.iter().position(|&x| x == cur) {
                        let mut cycle: Vec<usize> = seen[p..].to_vec();
                        cycle.reverse();
                        return Err(cycle);
                    }
                    seen.push(cur);
                    cur = *deps[cur].iter().find(|&&d| !done[d]).expect("an unfinished stage has an unfinished input");
                }
            }
        }
    }
    Ok(order)
}

/// Turns serde's "unknown field `x`, expected one of `a`, `b`" into a message plus a `did you mean` hint.
fn unknown_field_hint(msg: &str) -> (String, Option<String>) {
    let msg = msg.trim().to_string();
    let Some(rest) = msg.strip_prefix("unknown field `") else { return (msg, None) };
    let Some((field, tail)) = rest.split_once('`') else { return (msg, None) };
    let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
    let hint = did_you_mean(field, expected.iter().copied()).map(|h| format!("did you mean `{h}`?"));
    (msg.clone(), hint)
}

#[cfg(test)]
mod tests;
