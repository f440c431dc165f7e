//! The policy bundle: Rego files and JSON data in one folder, evaluated with regorus.
//!
//! Decisions come from package `cosigner`: `allow` (boolean), `deny` (a set of reason
//! strings) and `approvals_required` (a number). Default deny: no bundle, an undefined
//! `allow`, any `deny` reason or any evaluation error refuses the request. A bundle is
//! accepted only if it compiles and every `test_*` rule in its `*_test.rego` files is true;
//! its SHA-256 (over file names and contents, sorted) names the version that decided.

use std::path::Path;
use std::sync::Mutex;

use regorus::{Engine, Value};

use crate::decoded::hex;
use sha2::{Digest, Sha256};

/// Limits on what a bundle folder may hold.
pub const MAX_FILES: usize = 256;
pub const MAX_BUNDLE_BYTES: u64 = 16 << 20;
pub const PACKAGE: &str = "cosigner";
const RULES: [&str; 3] = ["allow", "deny", "approvals_required"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("policy bundle {path}: {problem}")]
    Load { path: String, problem: String },
    #[error("policy bundle: {file}: {problem}")]
    Compile { file: String, problem: String },
    #[error("policy bundle: test {test} in {file} failed ({outcome})")]
    TestFailed {
        file: String,
        test: String,
        outcome: String,
    },
}

/// The policy's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(Vec<String>),
    NeedsApproval(u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// SHA-256 (hex) of the bundle that decided.
    pub bundle_hash: String,
}

impl Decision {
    pub fn reasons(&self) -> Vec<String> {
        match &self.verdict {
            Verdict::Allow => Vec::new(),
            Verdict::Deny(r) => r.clone(),
            Verdict::NeedsApproval(n) => vec![format!(
                "the policy asks for {n} more approval(s); this build has no approval flow, so the request is refused"
            )],
        }
    }
}

pub struct Bundle {
    engine: Mutex<Engine>,
    /// Which of allow, deny, approvals_required the bundle defines (the others are
    /// undefined: not evaluated at all, which also spares an error path per request).
    defined: [bool; 3],
    hash: String,
    files: Vec<String>,
    tests: usize,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("hash", &self.hash)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `test_*` rule names declared in a test file, with its package.
fn test_rules(source: &str) -> (Option<String>, Vec<String>) {
    let mut package = None;
    let mut tests = Vec::new();
    for line in source.lines() {
        let l = line.trim_start();
        if let Some(p) = l.strip_prefix("package ") {
            package = Some(p.trim().to_string());
        } else if l.starts_with("test_") {
            let name: String = l
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !tests.contains(&name) {
                tests.push(name);
            }
        }
    }
    (package, tests)
}

impl Bundle {
    /// Loads every `.rego` and `.json` file of `dir` (not recursive), compiles the policy,
    /// runs its tests.
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        let load_err = |problem: String| BundleError::Load {
            path: dir.display().to_string(),
            problem,
        };
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| load_err(e.to_string()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("rego") | Some("json")
                    )
            })
            .collect();
        names.sort();
        if names.len() > MAX_FILES {
            return Err(load_err(format!(
                "{} files; at most {MAX_FILES}",
                names.len()
            )));
        }
        if !names
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "rego"))
        {
            return Err(load_err("no .rego file".into()));
        }
        let mut engine = Engine::new();
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut files = Vec::new();
        let mut test_list = Vec::new();
        for path in &names {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("?")
                .to_string();
            let text =
                std::fs::read_to_string(path).map_err(|e| load_err(format!("{name}: {e}")))?;
            total += text.len() as u64;
            if total > MAX_BUNDLE_BYTES {
                return Err(load_err(format!("more than {MAX_BUNDLE_BYTES} bytes")));
            }
            hasher.update((name.len() as u64).to_be_bytes());
            hasher.update(name.as_bytes());
            hasher.update((text.len() as u64).to_be_bytes());
            hasher.update(text.as_bytes());
            if name.ends_with(".rego") {
                engine.add_policy(name.clone(), text.clone()).map_err(|e| {
                    BundleError::Compile {
                        file: name.clone(),
                        problem: one_line(e),
                    }
                })?;
                if name.ends_with("_test.rego") {
                    let (package, tests) = test_rules(&text);
                    let package = package.unwrap_or_default();
                    for t in tests {
                        test_list.push((name.clone(), format!("data.{package}.{t}"), t));
                    }
                }
            } else {
                let v = Value::from_json_str(&text).map_err(|e| BundleError::Compile {
                    file: name.clone(),
                    problem: one_line(e),
                })?;
                engine.add_data(v).map_err(|e| BundleError::Compile {
                    file: name.clone(),
                    problem: one_line(e),
                })?;
            }
            files.push(name);
        }
        // Compile errors in rule bodies show on first evaluation: evaluate the decision
        // rules once with an empty input.
        engine.set_input(Value::new_object());
        let mut defined = [false; 3];
        for (i, rule) in RULES.iter().enumerate() {
            let path = format!("data.{PACKAGE}.{rule}");
            match engine.eval_rule(path.clone()) {
                Ok(_) => defined[i] = true,
                Err(e) => {
                    let msg = one_line(&e);
                    if !msg.contains("not a valid rule path") && !msg.contains("not found") {
                        return Err(BundleError::Compile {
                            file: "(bundle)".into(),
                            problem: format!("{path}: {msg}"),
                        });
                    }
                }
            }
        }
        for (file, rule, test) in &test_list {
            engine.set_input(Value::new_object());
            let outcome = match engine.eval_rule(rule.clone()) {
                Ok(v) if v == Value::from(true) => continue,
                Ok(Value::Undefined) => "undefined".to_string(),
                Ok(v) => format!("{v}"),
                Err(e) => one_line(e),
            };
            return Err(BundleError::TestFailed {
                file: file.clone(),
                test: test.clone(),
                outcome,
            });
        }
        Ok(Bundle {
            engine: Mutex::new(engine),
            defined,
            hash: hex(&hasher.finalize()),
            files,
            tests: test_list.len(),
        })
    }

    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn files(&self) -> &[String] {
        &self.files
    }

    pub fn tests(&self) -> usize {
        self.tests
    }

    /// Evaluates the decision rules for one input document. Never fails: an evaluation
    /// error is a denial that says why.
    /// Takes the document by value: converting it is part of every decision's cost.
    pub fn decide(&self, input: serde_json::Value) -> Decision {
        let verdict = match self.evaluate(input) {
            Ok(v) => v,
            Err(e) => Verdict::Deny(vec![format!("policy evaluation failed: {e}")]),
        };
        Decision {
            verdict,
            bundle_hash: self.hash.clone(),
        }
    }

    fn evaluate(&self, input: serde_json::Value) -> Result<Verdict, String> {
        let input = Value::from(input);
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        engine.set_input(input);
        let defined = self.defined;
        let mut rule = |name: &str| -> Result<Value, String> {
            let i = RULES.iter().position(|r| *r == name).unwrap_or(0);
            if !defined[i] {
                return Ok(Value::Undefined);
            }
            match engine.eval_rule(format!("data.{PACKAGE}.{name}")) {
                Ok(v) => Ok(v),
                Err(e) => {
                    let msg = one_line(e);
                    // A rule the bundle does not define is undefined, not an error.
                    if msg.contains("not a valid rule path") || msg.contains("not found") {
                        Ok(Value::Undefined)
                    } else {
                        Err(format!("{name}: {msg}"))
                    }
                }
            }
        };
        let deny = rule("deny")?;
        let approvals = rule("approvals_required")?;
        let allow = rule("allow")?;
        let mut reasons = Vec::new();
        match &deny {
            Value::Undefined => {}
            Value::Set(s) => {
                for r in s.iter() {
                    reasons.push(match r {
                        Value::String(s) => s.to_string(),
                        other => format!("{other}"),
                    });
                }
            }
            other => return Err(format!("deny must be a set of strings, not {other}")),
        }
        if !reasons.is_empty() {
            return Ok(Verdict::Deny(reasons));
        }
        let approvals = match &approvals {
            Value::Undefined => 0,
            v => v
                .as_u64()
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("approvals_required must be a small number, not {v}"))?,
        };
        if approvals > 0 {
            return Ok(Verdict::NeedsApproval(approvals));
        }
        match allow {
            Value::Bool(true) => Ok(Verdict::Allow),
            Value::Bool(false) | Value::Undefined => Ok(Verdict::Deny(vec![
                "no rule allows this request (default deny)".into(),
            ])),
            other => Err(format!("allow must be a boolean, not {other}")),
        }
    }
}
