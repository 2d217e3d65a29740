//! Checkpoints of a session's variables (`tf.train.Saver`) as safetensors files.
//!
//! Files are written atomically (temporary file, fsync, rename), so a crash while saving never
//! destroys the previous checkpoint. Next to the checkpoints, an index file `checkpoint`
//! (JSON) lists them, newest last; the oldest beyond `max_to_keep` are deleted. Restoring
//! checks every variable's name, shape and dtype before assigning any.

use crate::graph::Output;
use crate::session::Session;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tandem_tensor::io::{atomic_write, safetensors};
use tandem_tensor::{Error, Result, Tensor};

/// Name of the index file written next to the checkpoints.
pub const INDEX_FILE: &str = "checkpoint";

/// Saves and restores variables.
#[derive(Clone, Debug)]
pub struct Saver {
    vars: Vec<Output>,
    max_to_keep: usize,
    pytorch_names: bool,
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: e,
    }
}

/// `fc1/weight` -> `fc1.weight`.
pub fn pytorch_name(graph_name: &str) -> String {
    graph_name.replace('/', ".")
}

impl Saver {
    /// A saver of every variable of the session's graph (keeps the last 5 checkpoints).
    pub fn new(session: &Session) -> Result<Saver> {
        let vars = session
            .graph()
            .variables()?
            .into_iter()
            .map(|(o, _)| o)
            .collect();
        Ok(Saver {
            vars,
            max_to_keep: 5,
            pytorch_names: false,
        })
    }

    /// A saver of the given variables only.
    pub fn with_variables(vars: &[&Output]) -> Saver {
        Saver {
            vars: vars.iter().map(|v| (*v).clone()).collect(),
            max_to_keep: 5,
            pytorch_names: false,
        }
    }

    /// How many checkpoints to keep (0 = keep all).
    pub fn max_to_keep(mut self, n: usize) -> Saver {
        self.max_to_keep = n;
        self
    }

    /// Store names PyTorch style (`fc1/weight` becomes `fc1.weight`).
    pub fn pytorch_names(mut self, on: bool) -> Saver {
        self.pytorch_names = on;
        self
    }

    fn key(&self, v: &Output) -> String {
        if self.pytorch_names {
            pytorch_name(v.name())
        } else {
            v.name().to_string()
        }
    }

    fn collect(&self, session: &Session) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(self.vars.len());
        for v in &self.vars {
            out.push((self.key(v), session.variable_value(v)?.contiguous()?));
        }
        Ok(out)
    }

    /// Saves to `path` with a hook that runs after the bytes are written and before the file
    /// is renamed into place (an error there leaves any previous file at `path` untouched).
    pub fn save_to_with(
        &self,
        session: &Session,
        path: &Path,
        before_commit: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let tensors = self.collect(session)?;
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        let bytes = safetensors::to_bytes(&refs, Some(&meta))?;
        atomic_write(path, |w: &mut dyn Write| {
            w.write_all(&bytes).map_err(|e| io_err(path, e))?;
            before_commit()
        })
    }

    /// Saves to exactly `path` (no index).
    pub fn save_to(&self, session: &Session, path: &Path) -> Result<()> {
        self.save_to_with(session, path, || Ok(()))
    }

    /// Saves checkpoint `<prefix>-<step>.safetensors`, records it in the index file of its
    /// folder and deletes the oldest beyond `max_to_keep`. Returns the checkpoint's path.
    pub fn save(&self, session: &Session, prefix: &Path, step: u64) -> Result<PathBuf> {
        let base = prefix
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::invalid("saver", "the prefix names no file"))?;
        let dir = match prefix.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file = format!("{base}-{step}.safetensors");
        let path = dir.join(&file);
        self.save_to(session, &path)?;
        let mut all = read_index(&dir)?;
        all.retain(|f| f != &file);
        all.push(file);
        let mut removed = Vec::new();
        if self.max_to_keep > 0 && all.len() > self.max_to_keep {
            removed = all.drain(..all.len() - self.max_to_keep).collect();
        }
        write_index(&dir, &all)?;
        for f in removed {
            // Best effort: a checkpoint that cannot be deleted is only disk space.
            let _ = std::fs::remove_file(dir.join(f));
        }
        Ok(path)
    }

    /// Restores from a checkpoint file. Every variable must be present with its shape and
    /// dtype; nothing is assigned otherwise.
    pub fn restore(&self, session: &Session, path: &Path) -> Result<()> {
        let loaded: HashMap<String, Tensor> = safetensors::load(path)?.into_iter().collect();
        let mut values = Vec::with_capacity(self.vars.len());
        for v in &self.vars {
            let key = self.key(v);
            let t = loaded.get(&key).ok_or_else(|| {
                Error::Graph(format!(
                    "checkpoint {} has no tensor `{key}` for variable `{}`",
                    path.display(),
                    v.name()
                ))
            })?;
            let def = session.graph().variable_def(v)?;
            if t.shape() != def.shape.as_slice() || t.dtype() != def.dtype {
                return Err(Error::Graph(format!(
                    "checkpoint {}: `{key}` is {} {:?}, variable `{}` is {} {:?}",
                    path.display(),
                    t.dtype(),
                    t.shape(),
                    v.name(),
                    def.dtype,
                    def.shape
                )));
            }
            values.push((v, t.clone()));
        }
        session.set_variables(&values)
    }
}

/// The checkpoints listed in a folder's index, oldest first.
pub fn read_index(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join(INDEX_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io_err(&path, e)),
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Format {
        format: "checkpoint index",
        path: Some(path.display().to_string()),
        msg: e.to_string(),
    })?;
    Ok(v.get("all_model_checkpoint_paths")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default())
}

fn write_index(dir: &Path, all: &[String]) -> Result<()> {
    let path = dir.join(INDEX_FILE);
    let v = serde_json::json!({
        "model_checkpoint_path": all.last(),
        "all_model_checkpoint_paths": all,
    });
    let text = v.to_string();
    atomic_write(&path, |w: &mut dyn Write| {
        w.write_all(text.as_bytes()).map_err(|e| io_err(&path, e))
    })
}

/// The newest checkpoint listed in a folder's index.
pub fn latest_checkpoint(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(read_index(dir)?.last().map(|f| dir.join(f)))
}
