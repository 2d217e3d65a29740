//! State dicts across modes: an eager module's `state_dict()` (dotted names, `fc1.weight`) to
//! a graph's variables (scoped names, `fc1/weight`) and back. No element is copied: values are
//! shared until one side writes (copy-on-write).

use crate::trace::{eager_name, graph_name};
use tandem_eager::Value;
use tandem_graph::{Graph, Output, Session};
use tandem_tensor::{Error, Result};

/// Every variable of the session's graph as a state dict with eager names (`fc1/weight` ->
/// `fc1.weight`), in variable order. Variables without a value yet are an error.
pub fn graph_state_dict(session: &Session) -> Result<Vec<(String, Value)>> {
    let vars = session.graph().variables()?;
    let mut out = Vec::with_capacity(vars.len());
    for (o, _) in vars {
        let v = session.variable_value(&o)?;
        out.push((eager_name(o.name()), v));
    }
    Ok(out)
}

/// Sets the session's variables from an eager state dict (`fc1.weight` -> variable
/// `fc1/weight`). Every entry is checked first (a name with no variable, shape, dtype; with
/// `strict`, variables missing from the state dict); on any error nothing is written.
pub fn load_state_dict_into_session(
    session: &Session,
    state: &[(String, Value)],
    strict: bool,
) -> Result<()> {
    let graph = session.graph();
    let mut pairs: Vec<(Output, Value)> = Vec::with_capacity(state.len());
    for (name, v) in state {
        let var = graph.get(&graph_name(name)).map_err(|_| {
            Error::invalid(
                "load_state_dict_into_session",
                format!(
                    "`{name}` has no variable `{}` in the graph",
                    graph_name(name)
                ),
            )
        })?;
        pairs.push((var, v.clone()));
    }
    if strict {
        let missing: Vec<String> = graph
            .variables()?
            .into_iter()
            .map(|(o, _)| o.name().to_string())
            .filter(|n| !state.iter().any(|(k, _)| graph_name(k) == *n))
            .collect();
        if !missing.is_empty() {
            return Err(Error::invalid(
                "load_state_dict_into_session",
                format!(
                    "variables missing from the state dict: {}",
                    missing.join(", ")
                ),
            ));
        }
    }
    let refs: Vec<(&Output, Value)> = pairs.iter().map(|(o, v)| (o, v.clone())).collect();
    session.set_variables(&refs)
}

/// Creates one trainable variable per state-dict entry in `graph` (named `fc1/weight` for
/// `fc1.weight`, starting at the entry's value) and returns them with their eager names.
pub fn variables_from_state_dict(
    graph: &Graph,
    state: &[(String, Value)],
) -> Result<Vec<(String, Output)>> {
    state
        .iter()
        .map(|(name, v)| Ok((name.clone(), graph.variable(&graph_name(name), v.clone())?)))
        .collect()
}
