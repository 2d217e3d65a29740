//! `Einsum` with one or two operands, as a batched matrix product.
//!
//! Letters found in one operand only (and not in the output) are summed first; the two
//! operands are then permuted to `[batch, free, contracted]` and `[batch, contracted, free]`,
//! flattened to 3-D, multiplied, and the result is reshaped and permuted to the output's
//! order. Ellipses (`...`) are supported when both operands give them the same number of
//! dims. A letter repeated within one operand (diagonals, traces) is not supported.

use super::node::{req, Args, NodeCtx, Outs};
use tandem_ir::{Dim, Emit, EmitExt};
use tandem_tensor::Result;

/// Maps `op` if it belongs to this family.
pub(super) fn apply<F: Emit>(
    op: &str,
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
) -> Option<Result<Outs<F::Value>>> {
    Some(match op {
        "Einsum" => einsum(ctx, f, args),
        _ => return None,
    })
}

/// Placeholder letters for the dims covered by an ellipsis (not valid in equations).
const ELLIPSIS_LETTERS: &[char] = &['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];

/// The letters of one term with its ellipsis expanded to `n_ellipsis` placeholders.
fn expand_term(ctx: &NodeCtx<'_>, term: &str, n_ellipsis: usize) -> Result<Vec<char>> {
    let parts: Vec<&str> = term.split("...").collect();
    let check = |s: &str| -> Result<Vec<char>> {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    Ok(c)
                } else {
                    Err(ctx.err(format!(
                        "equation term '{term}' has an invalid character '{c}'"
                    )))
                }
            })
            .collect()
    };
    match parts.as_slice() {
        [one] => check(one),
        [before, after] => {
            let mut v = check(before)?;
            v.extend(ELLIPSIS_LETTERS.iter().take(n_ellipsis));
            v.extend(check(after)?);
            Ok(v)
        }
        _ => Err(ctx.err(format!("equation term '{term}' has more than one ellipsis"))),
    }
}

/// Operand letter lists and the output letter list of an equation for operands of `ranks`.
fn parse(ctx: &NodeCtx<'_>, eq: &str, ranks: &[usize]) -> Result<(Vec<Vec<char>>, Vec<char>)> {
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ranks.len() {
        return Err(ctx.err(format!(
            "equation '{eq}' has {} operand(s) but the node has {}",
            terms.len(),
            ranks.len()
        )));
    }
    let mut n_ellipsis = None;
    let mut ops = Vec::with_capacity(terms.len());
    for (t, &r) in terms.iter().zip(ranks) {
        let explicit = t.replace("...", "").chars().count();
        let n = if t.contains("...") {
            r.checked_sub(explicit).ok_or_else(|| {
                ctx.err(format!(
                    "term '{t}' has more letters than its operand's rank {r}"
                ))
            })?
        } else {
            0
        };
        if t.contains("...") {
            if n_ellipsis.is_some_and(|m| m != n) || n > ELLIPSIS_LETTERS.len() {
                return Err(ctx.err(format!(
                    "equation '{eq}': ellipses covering different numbers of dims are not supported"
                )));
            }
            n_ellipsis = Some(n);
        }
        let letters = expand_term(ctx, t, n)?;
        if letters.len() != r {
            return Err(ctx.err(format!(
                "term '{t}' has {} letters but its operand has rank {r}",
                letters.len()
            )));
        }
        let mut seen = letters.clone();
        seen.sort_unstable();
        if seen.windows(2).any(|w| w[0] == w[1]) {
            return Err(ctx.err(format!(
                "equation '{eq}': a letter repeated within one operand (diagonal or trace) is \
                 not supported"
            )));
        }
        ops.push(letters);
    }
    let n_ell = n_ellipsis.unwrap_or(0);
    let out = match rhs {
        Some(r) => expand_term(ctx, r, n_ell)?,
        None => {
            // Implicit output: the ellipsis dims, then letters used once, alphabetically.
            let all: Vec<char> = ops.iter().flatten().copied().collect();
            let mut once: Vec<char> = all
                .iter()
                .copied()
                .filter(|c| c.is_ascii_alphabetic() && all.iter().filter(|d| *d == c).count() == 1)
                .collect();
            once.sort_unstable();
            ELLIPSIS_LETTERS
                .iter()
                .take(n_ell)
                .copied()
                .chain(once)
                .collect()
        }
    };
    for c in &out {
        if !ops.iter().any(|o| o.contains(c)) {
            return Err(ctx.err(format!(
                "equation '{eq}': output letter '{c}' is in no operand"
            )));
        }
    }
    Ok((ops, out))
}

/// Sums the axes of `x` whose letters are not in `keep`; returns the value and its letters.
fn sum_unused<F: Emit>(
    f: &F,
    x: &F::Value,
    letters: &[char],
    keep: &[char],
) -> Result<(F::Value, Vec<char>)> {
    let axes: Vec<isize> = letters
        .iter()
        .enumerate()
        .filter(|(_, c)| !keep.contains(c))
        .map(|(i, _)| i as isize)
        .collect();
    if axes.is_empty() {
        return Ok((x.clone(), letters.to_vec()));
    }
    let left: Vec<char> = letters
        .iter()
        .copied()
        .filter(|c| keep.contains(c))
        .collect();
    Ok((f.sum(x, &axes, false)?, left))
}

/// Permutes `x` (with `letters`) to the order of `want`.
fn arrange<F: Emit>(f: &F, x: &F::Value, letters: &[char], want: &[char]) -> Result<F::Value> {
    let perm: Vec<isize> = want
        .iter()
        .filter_map(|c| letters.iter().position(|l| l == c).map(|p| p as isize))
        .collect();
    if perm.iter().enumerate().all(|(i, &p)| i as isize == p) {
        return Ok(x.clone());
    }
    f.permute(x, &perm)
}

/// The product of `dims`, `-1` when one is unknown; `None` when several are.
fn group_size(dims: &[Dim]) -> Option<isize> {
    match dims.iter().filter(|d| d.is_none()).count() {
        0 => Some(dims.iter().flatten().product::<usize>() as isize),
        1 => Some(-1),
        _ => None,
    }
}

fn einsum<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let eq = ctx
        .string("equation")?
        .ok_or_else(|| ctx.err("attribute equation is required"))?;
    let xs: Vec<&F::Value> = args.iter().flatten().map(|a| &a.value).collect();
    if xs.is_empty() || xs.len() > 2 {
        return Err(ctx.err(format!(
            "{} operands are not supported (one or two only)",
            xs.len()
        )));
    }
    req(ctx, args, 0)?;
    let ranks: Vec<usize> = xs.iter().map(|x| f.rank(x)).collect();
    let (ops, out) = parse(ctx, &eq, &ranks)?;
    // Letters needed after the per-operand sums: the output's and those shared.
    let shared = |i: usize| -> Vec<char> {
        let mut k = out.clone();
        for (j, o) in ops.iter().enumerate() {
            if j != i {
                k.extend(o.iter().copied());
            }
        }
        k
    };
    let (a, la) = sum_unused(f, xs[0], &ops[0], &shared(0))?;
    let Some(b_in) = xs.get(1) else {
        return Ok(vec![(arrange(f, &a, &la, &out)?, None)]);
    };
    let (b, lb) = sum_unused(f, b_in, &ops[1], &shared(1))?;
    let batch: Vec<char> = la
        .iter()
        .copied()
        .filter(|c| lb.contains(c) && out.contains(c))
        .collect();
    let contract: Vec<char> = la
        .iter()
        .copied()
        .filter(|c| lb.contains(c) && !out.contains(c))
        .collect();
    let left: Vec<char> = la.iter().copied().filter(|c| !lb.contains(c)).collect();
    let right: Vec<char> = lb.iter().copied().filter(|c| !la.contains(c)).collect();
    let dim_of = |c: char| -> Result<Dim> {
        let da = la.iter().position(|&l| l == c).map(|p| f.dim(&a, p));
        let db = lb.iter().position(|&l| l == c).map(|p| f.dim(&b, p));
        match (da, db) {
            (Some(Some(x)), Some(Some(y))) if x != y => Err(ctx.err(format!(
                "letter '{c}' has size {x} in one operand and {y} in the other (broadcasting \
                 is not supported)"
            ))),
            (Some(d), Some(e)) => Ok(d.or(e)),
            (Some(d), None) | (None, Some(d)) => Ok(d),
            (None, None) => Ok(None),
        }
    };
    let dims = |cs: &[char]| -> Result<Vec<Dim>> { cs.iter().map(|&c| dim_of(c)).collect() };
    let (db, dl, dk, dr) = (dims(&batch)?, dims(&left)?, dims(&contract)?, dims(&right)?);
    let too_dynamic = || ctx.err(format!("equation '{eq}' has too many run-time dims"));
    let size = |d: &[Dim]| group_size(d).ok_or_else(too_dynamic);
    let (sb, sl, sk, sr) = (size(&db)?, size(&dl)?, size(&dk)?, size(&dr)?);
    if [sb, sl, sk].iter().filter(|&&v| v < 0).count() > 1
        || [sb, sk, sr].iter().filter(|&&v| v < 0).count() > 1
    {
        return Err(too_dynamic());
    }
    let order_a: Vec<char> = [&batch[..], &left[..], &contract[..]].concat();
    let order_b: Vec<char> = [&batch[..], &contract[..], &right[..]].concat();
    let a3 = f.reshape(&arrange(f, &a, &la, &order_a)?, &[sb, sl, sk])?;
    let b3 = f.reshape(&arrange(f, &b, &lb, &order_b)?, &[sb, sk, sr])?;
    let y = f.matmul2(&a3, &b3)?;
    let full: Vec<Dim> = [&db[..], &dl[..], &dr[..]].concat();
    if full.iter().filter(|d| d.is_none()).count() > 1 {
        return Err(too_dynamic());
    }
    let target: Vec<isize> = full.iter().map(|d| d.map_or(-1, |v| v as isize)).collect();
    let y = f.reshape(&y, &target)?;
    let letters: Vec<char> = [&batch[..], &left[..], &right[..]].concat();
    Ok(vec![(arrange(f, &y, &letters, &out)?, None)])
}
