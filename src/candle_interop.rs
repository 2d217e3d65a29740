//! Conversion between Tandem tensors and [`candle_core::Tensor`] (feature `candle`).
//!
//! Both directions copy the elements once (candle owns its storage) and keep shape and dtype:
//! f32, f64, f16, bf16, i64, i32 and u8 map to the candle dtype of the same name. Candle has no
//! boolean dtype, so a Tandem `bool` tensor becomes a candle `u8` tensor of zeros and ones.
//! Candle tensors must be on the CPU; other candle dtypes (u32, i16, the 8-bit floats) are
//! errors naming the dtype.
//!
//! Models move through candle-nn's `VarMap` safetensors files: candle-nn's `Linear` and
//! `Conv2d` store `PREFIX.weight` (`[out, in]`, `[out, in, kh, kw]`) and `PREFIX.bias`
//! (`[out]`), the names and layouts of PyTorch and of Tandem's eager `nn` modules, so
//! [`load_varmap_safetensors`] loads a file written by `VarMap::save` into a Tandem module
//! and [`save_varmap_safetensors`] writes one that `VarMap::load` reads. A `prefix` (e.g.
//! `model` for names like `model.fc1.weight`) selects one model out of a larger var map.
//!
//! ```
//! use tandem::candle_interop::{from_candle, to_candle};
//! let t = tandem::tensor::Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
//! let c = to_candle(&t).unwrap();
//! assert_eq!(c.dims(), &[2, 2]);
//! let back = from_candle(&c).unwrap();
//! assert_eq!(back.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
//! ```

use candle_core::{DType as CDType, Device as CDevice, Tensor as CTensor};
use std::path::Path;
use tandem_eager::nn::Module;
use tandem_tensor::{bf16, f16, DType, Error, Result, Tensor};

fn candle_error(op: &'static str, e: candle_core::Error) -> Error {
    Error::invalid(op, format!("candle: {e}"))
}

/// Copies a Tandem tensor (any layout, CPU) into a new candle CPU tensor.
pub fn to_candle(t: &Tensor) -> Result<CTensor> {
    let shape = t.shape().to_vec();
    let dev = CDevice::Cpu;
    let made = match t.dtype() {
        DType::F32 => CTensor::from_vec(t.to_vec::<f32>()?, shape, &dev),
        DType::F64 => CTensor::from_vec(t.to_vec::<f64>()?, shape, &dev),
        DType::F16 => CTensor::from_vec(t.to_vec::<f16>()?, shape, &dev),
        DType::BF16 => CTensor::from_vec(t.to_vec::<bf16>()?, shape, &dev),
        DType::I64 => CTensor::from_vec(t.to_vec::<i64>()?, shape, &dev),
        DType::I32 => CTensor::from_vec(t.to_vec::<i32>()?, shape, &dev),
        DType::U8 => CTensor::from_vec(t.to_vec::<u8>()?, shape, &dev),
        DType::Bool => {
            let v: Vec<u8> = t.to_vec::<bool>()?.into_iter().map(u8::from).collect();
            CTensor::from_vec(v, shape, &dev)
        }
    };
    made.map_err(|e| candle_error("to_candle", e))
}

/// Copies a candle CPU tensor (any layout) into a new Tandem tensor of the same shape and dtype.
pub fn from_candle(c: &CTensor) -> Result<Tensor> {
    if !c.device().is_cpu() {
        return Err(Error::invalid(
            "from_candle",
            format!(
                "the candle tensor is on {:?}; move it to the CPU first",
                c.device()
            ),
        ));
    }
    let shape = c.dims().to_vec();
    let flat = c
        .flatten_all()
        .map_err(|e| candle_error("from_candle", e))?;
    let err = |e| candle_error("from_candle", e);
    match c.dtype() {
        CDType::F32 => Tensor::from_vec(flat.to_vec1::<f32>().map_err(err)?, &shape),
        CDType::F64 => Tensor::from_vec(flat.to_vec1::<f64>().map_err(err)?, &shape),
        CDType::F16 => Tensor::from_vec(flat.to_vec1::<f16>().map_err(err)?, &shape),
        CDType::BF16 => Tensor::from_vec(flat.to_vec1::<bf16>().map_err(err)?, &shape),
        CDType::I64 => Tensor::from_vec(flat.to_vec1::<i64>().map_err(err)?, &shape),
        CDType::I32 => Tensor::from_vec(flat.to_vec1::<i32>().map_err(err)?, &shape),
        CDType::U8 => Tensor::from_vec(flat.to_vec1::<u8>().map_err(err)?, &shape),
        other => Err(Error::invalid(
            "from_candle",
            format!("candle dtype {other:?} has no Tandem equivalent (f32, f64, f16, bf16, i64, i32, u8 do)"),
        )),
    }
}

/// `prefix.name`, or `name` when `prefix` is empty.
fn prefixed(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The entries of `named` under `prefix` with the prefix removed; the others are skipped.
fn strip_prefix<T>(named: Vec<(String, T)>, prefix: &str) -> Vec<(String, T)> {
    if prefix.is_empty() {
        return named;
    }
    let head = format!("{prefix}.");
    named
        .into_iter()
        .filter_map(|(n, v)| n.strip_prefix(&head).map(|rest| (rest.to_string(), v)))
        .collect()
}

/// Loads named candle tensors (e.g. the variables of a candle-nn `VarMap`) into `module`:
/// the entries named `prefix.NAME` fill the module's parameter or buffer `NAME` (all entries
/// when `prefix` is empty; entries outside the prefix are ignored). Every parameter must be
/// present with its shape and dtype and no unknown name may remain under the prefix; on any
/// error the module is unchanged.
pub fn load_candle_tensors<'a>(
    module: &dyn Module,
    tensors: impl IntoIterator<Item = (&'a str, &'a CTensor)>,
    prefix: &str,
) -> Result<()> {
    let named = tensors
        .into_iter()
        .map(|(n, c)| Ok((n.to_string(), from_candle(c).map_err(|e| e.context(n))?)))
        .collect::<Result<Vec<_>>>()?;
    module.load_state_dict(&strip_prefix(named, prefix), true)
}

/// The state dict of `module` as candle CPU tensors named `prefix.NAME` (`NAME` alone when
/// `prefix` is empty), e.g. to fill a candle-nn `VarMap` before building a model on it.
pub fn module_to_candle(module: &dyn Module, prefix: &str) -> Result<Vec<(String, CTensor)>> {
    module
        .state_dict()
        .into_iter()
        .map(|(n, v)| Ok((prefixed(prefix, &n), to_candle(&v)?)))
        .collect()
}

/// Loads a safetensors file written by candle-nn's `VarMap::save` into `module`; see
/// [`load_candle_tensors`] for how `prefix` selects the entries. The module is unchanged on
/// error, and errors name the file.
pub fn load_varmap_safetensors(
    module: &dyn Module,
    path: impl AsRef<Path>,
    prefix: &str,
) -> Result<()> {
    let path = path.as_ref();
    let named = tandem_tensor::io::safetensors::load(path)?;
    let selected = strip_prefix(named, prefix);
    if selected.is_empty() {
        return Err(Error::invalid(
            "load_varmap_safetensors",
            format!("no tensor is named `{prefix}.*` in the file"),
        )
        .context(path.display().to_string()));
    }
    module
        .load_state_dict(&selected, true)
        .map_err(|e| e.context(path.display().to_string()))
}

/// Writes `module`'s state dict as a safetensors file with the names candle-nn's
/// `VarBuilder::pp(prefix)` looks up (`prefix.fc1.weight`), so `VarMap::load` or
/// `VarBuilder::from_mmaped_safetensors` read it into the equivalent candle model.
pub fn save_varmap_safetensors(
    module: &dyn Module,
    path: impl AsRef<Path>,
    prefix: &str,
) -> Result<()> {
    let sd: Vec<(String, Tensor)> = module
        .state_dict()
        .into_iter()
        .map(|(n, v)| (prefixed(prefix, &n), v))
        .collect();
    let refs: Vec<(&str, &Tensor)> = sd.iter().map(|(n, v)| (n.as_str(), v)).collect();
    tandem_tensor::io::safetensors::save(path, &refs, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::{Module as CModule, VarBuilder, VarMap};
    use tandem_eager::nn::{Conv2d, Linear, MaxPool2d};
    use tandem_eager::Tensor as ETensor;

    /// conv 1->3 5x5 pad 2, relu, maxpool 2, linear 3*14*14 -> 10: both kinds of layer
    /// candle-nn saves.
    struct Small {
        conv: Conv2d,
        fc: Linear,
        pool: MaxPool2d,
    }

    impl Small {
        fn new() -> Small {
            Small {
                conv: Conv2d::new(1, 3, 5).unwrap().padding(2),
                fc: Linear::new(3 * 14 * 14, 10, true).unwrap(),
                pool: MaxPool2d::new(2),
            }
        }
    }

    impl Module for Small {
        fn forward(&self, x: &ETensor) -> Result<ETensor> {
            let h = self.pool.forward(&self.conv.forward(x)?.relu()?)?;
            self.fc.forward(&h.flatten(1, -1)?)
        }
        fn children(&self) -> Vec<(String, &dyn Module)> {
            vec![("conv".into(), &self.conv), ("fc".into(), &self.fc)]
        }
    }

    struct CandleSmall {
        conv: candle_nn::Conv2d,
        fc: candle_nn::Linear,
    }

    impl CandleSmall {
        fn new(vb: VarBuilder) -> CandleSmall {
            let cfg = candle_nn::Conv2dConfig {
                padding: 2,
                ..Default::default()
            };
            CandleSmall {
                conv: candle_nn::conv2d(1, 3, 5, cfg, vb.pp("conv")).unwrap(),
                fc: candle_nn::linear(3 * 14 * 14, 10, vb.pp("fc")).unwrap(),
            }
        }
        fn forward(&self, x: &CTensor) -> CTensor {
            let h = self.conv.forward(x).unwrap().relu().unwrap();
            let h = h.max_pool2d(2).unwrap().flatten_from(1).unwrap();
            self.fc.forward(&h).unwrap()
        }
    }

    fn input() -> Tensor {
        let v: Vec<f32> = (0..2 * 784)
            .map(|i| ((i * 37) % 101) as f32 / 101.0)
            .collect();
        Tensor::from_vec(v, &[2, 1, 28, 28]).unwrap()
    }

    fn assert_close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("tandem-candle-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_candle_varmap_file_loads_into_an_eager_module() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, CDType::F32, &CDevice::Cpu);
        let cm = CandleSmall::new(vb.pp("model"));
        let path = temp("from-candle.safetensors");
        varmap.save(&path).unwrap();
        let tm = Small::new();
        load_varmap_safetensors(&tm, &path, "model").unwrap();
        let x = input();
        let want = cm.forward(&to_candle(&x).unwrap());
        let want = from_candle(&want).unwrap().to_vec::<f32>().unwrap();
        let got = tm.forward(&ETensor::from_value(x)).unwrap();
        assert_close(&got.to_vec::<f32>().unwrap(), &want);
        // The wrong prefix selects nothing: an error naming the prefix, module unchanged.
        let before = tm
            .fc
            .forward(&ETensor::ones(&[1, 588], DType::F32))
            .unwrap();
        let e = load_varmap_safetensors(&tm, &path, "other")
            .unwrap_err()
            .to_string();
        assert!(e.contains("other"), "{e}");
        let after = tm
            .fc
            .forward(&ETensor::ones(&[1, 588], DType::F32))
            .unwrap();
        assert_eq!(
            before.to_vec::<f32>().unwrap(),
            after.to_vec::<f32>().unwrap()
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_eager_module_saves_a_file_candle_varmap_loads() {
        let tm = Small::new();
        let path = temp("to-candle.safetensors");
        save_varmap_safetensors(&tm, &path, "").unwrap();
        let mut varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, CDType::F32, &CDevice::Cpu);
        let cm = CandleSmall::new(vb);
        varmap.load(&path).unwrap();
        let x = input();
        let got = from_candle(&cm.forward(&to_candle(&x).unwrap())).unwrap();
        let want = tm.forward(&ETensor::from_value(x)).unwrap();
        assert_close(
            &got.to_vec::<f32>().unwrap(),
            &want.to_vec::<f32>().unwrap(),
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn in_memory_candle_tensors_load_with_checks() {
        let tm = Small::new();
        let named = module_to_candle(&tm, "net").unwrap();
        let mut names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "net.conv.bias",
                "net.conv.weight",
                "net.fc.bias",
                "net.fc.weight"
            ]
        );
        let other = Small::new();
        load_candle_tensors(&other, named.iter().map(|(n, c)| (n.as_str(), c)), "net").unwrap();
        let x = ETensor::from_value(input());
        assert_eq!(
            other.forward(&x).unwrap().to_vec::<f32>().unwrap(),
            tm.forward(&x).unwrap().to_vec::<f32>().unwrap()
        );
        // A missing parameter is an error naming it.
        let partial: Vec<(&str, &CTensor)> = named
            .iter()
            .filter(|(n, _)| n != "net.fc.bias")
            .map(|(n, c)| (n.as_str(), c))
            .collect();
        let e = load_candle_tensors(&other, partial, "net")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fc.bias"), "{e}");
        // A wrong shape is an error too.
        let bad = CTensor::zeros((4, 4), CDType::F32, &CDevice::Cpu).unwrap();
        let mut wrong: Vec<(&str, &CTensor)> = named
            .iter()
            .filter(|(n, _)| n != "net.fc.bias")
            .map(|(n, c)| (n.as_str(), c))
            .collect();
        wrong.push(("net.fc.bias", &bad));
        assert!(load_candle_tensors(&other, wrong, "net").is_err());
    }

    #[test]
    fn every_shared_dtype_round_trips_with_shape_and_values() {
        let base = Tensor::from_vec((0..24).map(|i| i as f64 - 7.0).collect(), &[2, 3, 4]).unwrap();
        for dt in [
            DType::F32,
            DType::F64,
            DType::F16,
            DType::BF16,
            DType::I64,
            DType::I32,
        ] {
            let t = base.cast(dt).unwrap();
            let c = to_candle(&t).unwrap();
            assert_eq!(c.dims(), &[2, 3, 4]);
            let back = from_candle(&c).unwrap();
            assert_eq!(back.dtype(), dt);
            assert_eq!(
                back.cast(DType::F64).unwrap().to_vec::<f64>().unwrap(),
                t.cast(DType::F64).unwrap().to_vec::<f64>().unwrap()
            );
        }
        let u = Tensor::from_vec(vec![0u8, 7, 255], &[3]).unwrap();
        assert_eq!(
            from_candle(&to_candle(&u).unwrap())
                .unwrap()
                .to_vec::<u8>()
                .unwrap(),
            vec![0, 7, 255]
        );
    }

    #[test]
    fn views_and_bools_convert_by_value() {
        let t = Tensor::from_vec((0..6).map(|i| i as f32).collect(), &[2, 3]).unwrap();
        let tt = t.transpose(0, 1).unwrap();
        let c = to_candle(&tt).unwrap();
        assert_eq!(c.dims(), &[3, 2]);
        assert_eq!(
            c.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
        // A non-contiguous candle tensor comes back in logical order.
        let ct = c.t().unwrap();
        assert_eq!(
            from_candle(&ct).unwrap().to_vec::<f32>().unwrap(),
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
        let b = Tensor::from_vec(vec![true, false, true], &[3]).unwrap();
        let cb = to_candle(&b).unwrap();
        assert_eq!(cb.dtype(), CDType::U8);
        assert_eq!(cb.to_vec1::<u8>().unwrap(), vec![1, 0, 1]);
    }

    #[test]
    fn unsupported_candle_dtypes_are_errors_naming_them() {
        let c = CTensor::from_vec(vec![1u32, 2], 2, &CDevice::Cpu).unwrap();
        let e = from_candle(&c).unwrap_err().to_string();
        assert!(e.contains("U32"), "{e}");
    }
}
