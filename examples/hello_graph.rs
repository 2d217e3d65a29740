//! Hello, graph: build `3 + 4` as a graph and run it in a session.

use tandem::graph::{Graph, Session};

fn main() -> tandem::tensor::Result<()> {
    let g = Graph::new();
    let a = g.constant_scalar(3.0f32)?;
    let b = g.constant_scalar(4.0f32)?;
    let c = (&a + &b)?;
    let session = Session::new(&g)?;
    let out = session.run(&[&c], &[])?;
    println!("3 + 4 = {}", out[0].item()?);
    Ok(())
}
