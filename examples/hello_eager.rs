//! The smallest eager-mode program: add two scalars, then differentiate a product.
//!
//! `cargo run --example hello_eager`

use tandem::eager::{tensor, Result};

fn main() -> Result<()> {
    let s = (tensor(3.0) + tensor(4.0))?;
    println!("3 + 4 = {}", s.item()?);

    let x = tensor(3.0).requires_grad_(true);
    let y = (&x * &x)?; // y = x^2
    y.backward()?;
    let dx = x.grad().map(|g| g.item()).transpose()?;
    println!("d(x^2)/dx at x = 3: {dx:?}");
    Ok(())
}
