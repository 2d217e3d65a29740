//! Loading a model file (ONNX or Tandem graph file) as a graph with named inputs and outputs.

use std::collections::BTreeMap;
use std::path::Path;
use tandem_graph::{Graph, NodeKind, Output};
use tandem_onnx::graph_bridge::{graph_signature, import_graph_model};
use tandem_onnx::{parse_file, ParsedModel};
use tandem_tensor::{Error, Result};

/// The two file formats the command understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An `.onnx` model.
    Onnx,
    /// A Tandem graph file (`Graph::save`).
    Graph,
}

impl Format {
    /// The format of an existing file: graph files start with the graph magic, anything else
    /// is read as ONNX.
    pub fn detect(path: &Path) -> Result<Format> {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut magic = [0u8; 8];
        let n = f.read(&mut magic).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(if n == 8 && &magic == tandem_graph::serialize::MAGIC {
            Format::Graph
        } else {
            Format::Onnx
        })
    }

    /// The format a file should be written in, by extension (`.onnx`, otherwise a graph file).
    pub fn for_output(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("onnx") => Format::Onnx,
            _ => Format::Graph,
        }
    }
}

/// A model loaded as a graph.
pub struct Model {
    /// The parsed ONNX model (ONNX files only).
    pub onnx: Option<ParsedModel>,
    /// The graph.
    pub graph: Graph,
    /// Placeholders, in order.
    pub inputs: Vec<Output>,
    /// Named outputs, in order.
    pub outputs: Vec<(String, Output)>,
}

/// Reads an ONNX model without importing it (for `info` on models with unsupported ops).
pub fn parse_onnx(path: &Path) -> Result<ParsedModel> {
    parse_file(path)
}

impl Model {
    /// Loads `path` (format detected from the content).
    pub fn load(path: &Path) -> Result<Model> {
        match Format::detect(path)? {
            Format::Onnx => {
                let parsed = parse_file(path)?;
                Model::from_onnx(parsed).map_err(|e| e.context(path.display().to_string()))
            }
            Format::Graph => {
                let graph = Graph::load(path)?;
                let (inputs, outputs) =
                    graph_signature(&graph).map_err(|e| e.context(path.display().to_string()))?;
                Ok(Model {
                    onnx: None,
                    graph,
                    inputs,
                    outputs,
                })
            }
        }
    }

    /// Imports a parsed ONNX model.
    pub fn from_onnx(parsed: ParsedModel) -> Result<Model> {
        let (graph, inputs, outputs) = import_graph_model(&parsed)?;
        Ok(Model {
            onnx: Some(parsed),
            graph,
            inputs,
            outputs,
        })
    }

    /// Op counts: ONNX op types for ONNX files, node kinds (ops only) for graph files.
    pub fn op_counts(&self) -> Result<Vec<(String, usize)>> {
        if let Some(p) = &self.onnx {
            return Ok(p.op_counts());
        }
        graph_op_counts(&self.graph)
    }

    /// Number of parameter elements: initializers (ONNX) or variables (graph files).
    pub fn parameter_count(&self) -> Result<usize> {
        if let Some(p) = &self.onnx {
            return Ok(p.parameter_count());
        }
        Ok(self
            .graph
            .variables()?
            .iter()
            .map(|(_, d)| d.shape.iter().product::<usize>())
            .sum())
    }
}

/// How many nodes of each kind a graph has (sources and identities left out).
pub fn graph_op_counts(g: &Graph) -> Result<Vec<(String, usize)>> {
    let mut m: BTreeMap<String, usize> = BTreeMap::new();
    for n in g.nodes()? {
        if matches!(
            n.kind,
            NodeKind::Placeholder | NodeKind::Variable(_) | NodeKind::Identity
        ) {
            continue;
        }
        *m.entry(n.kind.name().to_string()).or_default() += 1;
    }
    Ok(m.into_iter().collect())
}
