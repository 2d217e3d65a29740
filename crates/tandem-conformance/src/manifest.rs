//! Reading the parity manifest and the case files (safetensors written by PyTorch).

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tandem_tensor::{DType, Error, Result, Tensor};

/// Relative and absolute tolerance: `|got - want| <= atol + rtol * |want|`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
}

/// One input of a case.
#[derive(Clone, Debug)]
pub struct InputSpec {
    /// Tensor name in the file (`input0`, ...).
    pub name: String,
    /// `float` (the file's float dtype) or an integer dtype name.
    pub dtype: String,
    /// Whether a gradient is expected for it.
    pub differentiable: bool,
}

/// One op case of the manifest.
#[derive(Clone, Debug)]
pub struct Case {
    /// Case id.
    pub name: String,
    /// Op name (PyTorch function name).
    pub op: String,
    /// The exact PyTorch expression.
    pub call: String,
    /// Attributes (dims, reductions, strides, ...).
    pub attributes: Value,
    /// Files by dtype name (`float32`, `float64`), relative to the manifest's folder.
    pub files: HashMap<String, String>,
    /// Inputs in call order.
    pub inputs: Vec<InputSpec>,
    /// Output tensor names in order (`output`, then extras).
    pub outputs: Vec<String>,
    /// Gradient tensor names, one per differentiable input, in order.
    pub grads: Vec<String>,
}

/// One optimizer case.
#[derive(Clone, Debug)]
pub struct OptimizerCase {
    /// Case id.
    pub name: String,
    /// Optimizer class name (`SGD`, `Adam`, `AdamW`, `RMSprop`, ...).
    pub optimizer: String,
    /// Hyperparameters as given to PyTorch.
    pub hyperparameters: Value,
    /// Files by dtype name.
    pub files: HashMap<String, String>,
    /// Number of steps recorded.
    pub steps: usize,
    /// Parameter names (`param0`, ...).
    pub params: Vec<String>,
}

/// The whole manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// Folder the manifest was read from.
    pub dir: PathBuf,
    /// Tolerances by dtype name.
    pub tolerance: HashMap<String, Tolerance>,
    /// Op cases.
    pub cases: Vec<Case>,
    /// Optimizer cases.
    pub optimizers: Vec<OptimizerCase>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::format("parity manifest", msg)
}

fn str_of(v: &Value, key: &str) -> Result<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| bad(format!("missing string field `{key}` in {v}")))
}

fn files_of(v: &Value) -> HashMap<String, String> {
    let mut files = HashMap::new();
    if let Some(m) = v.get("files").and_then(Value::as_object) {
        for (k, f) in m {
            if let Some(f) = f.as_str() {
                files.insert(k.clone(), f.to_string());
            }
        }
    } else if let Some(f) = v.get("file").and_then(Value::as_str) {
        files.insert("float64".to_string(), f.to_string());
    }
    files
}

/// The folder of the parity fixtures: `$TANDEM_PARITY_DIR`, else `tests/fixtures/parity` of
/// the workspace.
pub fn parity_dir() -> PathBuf {
    if let Ok(d) = std::env::var("TANDEM_PARITY_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/parity")
}

impl Manifest {
    /// Reads `manifest.json` from a folder.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let root: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let mut tolerance = HashMap::new();
        if let Some(t) = root.get("tolerance").and_then(Value::as_object) {
            for (k, v) in t {
                let rtol = v.get("rtol").and_then(Value::as_f64).unwrap_or(1e-4);
                let atol = v.get("atol").and_then(Value::as_f64).unwrap_or(1e-5);
                tolerance.insert(k.clone(), Tolerance { rtol, atol });
            }
        }
        let mut cases = Vec::new();
        for c in root
            .get("cases")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let inputs = c
                .get("inputs")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("case without inputs"))?
                .iter()
                .map(|i| {
                    Ok(InputSpec {
                        name: str_of(i, "name")?,
                        dtype: str_of(i, "dtype").unwrap_or_else(|_| "float".into()),
                        differentiable: i
                            .get("differentiable")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let outputs = c
                .get("outputs")
                .and_then(Value::as_array)
                .map(|o| {
                    o.iter()
                        .filter_map(|x| x.get("name").and_then(Value::as_str).map(String::from))
                        .collect()
                })
                .unwrap_or_else(|| vec!["output".to_string()]);
            let grads = c
                .get("grads")
                .and_then(Value::as_array)
                .map(|g| {
                    g.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            cases.push(Case {
                name: str_of(c, "name")?,
                op: str_of(c, "op")?,
                call: str_of(c, "call").unwrap_or_default(),
                attributes: c.get("attributes").cloned().unwrap_or(Value::Null),
                files: files_of(c),
                inputs,
                outputs,
                grads,
            });
        }
        let mut optimizers = Vec::new();
        for o in root
            .get("optimizers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            optimizers.push(OptimizerCase {
                name: str_of(o, "name")?,
                optimizer: str_of(o, "optimizer")?,
                hyperparameters: o.get("hyperparameters").cloned().unwrap_or(Value::Null),
                files: files_of(o),
                steps: o.get("steps").and_then(Value::as_u64).unwrap_or(1) as usize,
                params: o
                    .get("params")
                    .and_then(Value::as_array)
                    .map(|p| {
                        p.iter()
                            .filter_map(|x| x.get("name").and_then(Value::as_str).map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        Ok(Manifest {
            dir: dir.to_path_buf(),
            tolerance,
            cases,
            optimizers,
        })
    }

    /// Tolerance for a dtype name (`float32`, `float64`), with the README's defaults.
    pub fn tolerance_for(&self, dtype: &str) -> Tolerance {
        self.tolerance.get(dtype).copied().unwrap_or(match dtype {
            "float64" => Tolerance {
                rtol: 1e-9,
                atol: 1e-10,
            },
            _ => Tolerance {
                rtol: 1e-4,
                atol: 1e-5,
            },
        })
    }

    /// Loads the tensors of a case file.
    pub fn tensors(&self, file: &str) -> Result<HashMap<String, Tensor>> {
        let path = self.dir.join(file);
        Ok(tandem_tensor::io::safetensors::load(&path)?
            .into_iter()
            .collect())
    }
}

/// The dtype of a float-dtype name (`float32`, `float64`).
pub fn float_dtype(name: &str) -> Option<DType> {
    DType::from_name(name).filter(|d| d.is_float())
}
