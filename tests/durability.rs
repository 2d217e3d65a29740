//! Durability: every writer of Tandem (npy, npz, safetensors, eager `save_safetensors`, graph
//! `Saver`, `Graph::save`, ONNX `save`) writes a temporary file next to the target and renames
//! it into place, so that a save that fails or is killed half-way leaves the previous file
//! byte-for-byte intact.
//!
//! Each case runs the save in a child process (this test binary re-run on one test), so that
//! the failure is real and cannot disturb other tests:
//! - `fail`: the child's file-size limit (`RLIMIT_FSIZE`) is set below the new file's size, so
//!   the write fails part-way with `EFBIG`; the save must return an error, the old file must be
//!   unchanged and no temporary file may be left behind;
//! - `kill`: the child is killed with `SIGKILL` while its temporary file is being written; the
//!   old file must be unchanged (or, if the save won the race, the new file complete).
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tandem::eager::nn::{Linear, Module};
use tandem::graph::{saver::Saver, Graph, Session};
use tandem::ir::Op;
use tandem::onnx::{ExportGraph, ExportInput, ExportNode, ValueRef};
use tandem::tensor::{io, DType, Result, Tensor};

const CHILD_ENV: &str = "TANDEM_DURABILITY_CHILD";
const WRITERS: [&str; 7] = [
    "npy",
    "npz",
    "safetensors",
    "eager_state_dict",
    "graph_saver",
    "graph_file",
    "onnx",
];

/// A tensor of `n` f32 values that differ between versions.
fn values(n: usize, version: f32) -> Tensor {
    let v: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 + version).collect();
    Tensor::from_vec(v, &[n]).unwrap()
}

/// Writes version `big` (false: a small old file, true: a large new one) with `writer`.
fn write(writer: &str, path: &Path, big: bool) -> Result<()> {
    // 8 Mi f32 (32 MiB) for the new file: large enough that a kill lands mid-write.
    let n = if big { 8 << 20 } else { 1000 };
    let version = if big { 2.0 } else { 1.0 };
    match writer {
        "npy" => io::npy::write(path, &values(n, version)),
        "npz" => io::npz::write(path, &[("a", &values(n, version))]),
        "safetensors" => io::safetensors::save(path, &[("a", &values(n, version))], None),
        "eager_state_dict" => {
            let side = if big { 2896 } else { 30 };
            let layer = Linear::new(side, side, true)?;
            layer.save_safetensors(path)
        }
        "graph_saver" => {
            let g = Graph::new();
            g.variable("w", values(n, version))?;
            let s = Session::new(&g)?;
            Saver::new(&s)?.save_to(&s, path)
        }
        "graph_file" => {
            let g = Graph::new();
            g.variable("w", values(n, version))?;
            g.save(path)
        }
        "onnx" => {
            let side = if big { 2896 } else { 30 };
            let w = values(side * side, version).reshape(&[side as isize, side as isize])?;
            let graph = ExportGraph {
                inputs: vec![ExportInput {
                    name: "x".into(),
                    dtype: DType::F32,
                    dims: vec![None, Some(side)],
                }],
                initializers: vec![("w".into(), w)],
                nodes: vec![ExportNode {
                    name: "mm".into(),
                    op: Op::MatMul,
                    inputs: vec![ValueRef::Input(0), ValueRef::Initializer(0)],
                }],
                outputs: vec![("y".into(), ValueRef::Node(0))],
            };
            tandem::onnx::save(&graph, 13, path)
        }
        other => Err(tandem::tensor::Error::invalid(
            "durability test",
            format!("unknown writer {other}"),
        )),
    }
}

/// Reads the file back with the matching reader (the file must be complete and valid).
fn read_back(writer: &str, path: &Path) -> Result<()> {
    match writer {
        "npy" => io::npy::read(path).map(|_| ()),
        "npz" => io::npz::read(path).map(|_| ()),
        "safetensors" | "eager_state_dict" | "graph_saver" => {
            io::safetensors::load(path).map(|_| ())
        }
        "graph_file" => Graph::load(path).map(|_| ()),
        _ => tandem::onnx::parse_file(path).map(|_| ()),
    }
}

/// A fresh folder for one case.
fn case_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-durability-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Names in `dir` other than `keep`.
fn others(dir: &Path, keep: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != keep)
        .collect()
}

/// The child's side: `mode writer path` from the environment.
#[test]
fn durability_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.splitn(3, ' ').collect();
    let [mode, writer, path] = parts[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    if mode == "fail" {
        // SAFETY: plain libc calls on this (single-test) child process; the limit makes
        // writes past 64 KiB fail with EFBIG instead of raising SIGXFSZ.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: libc::RLIM_INFINITY,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
    }
    match write(writer, Path::new(path), true) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            println!("SAVE-ERROR: {e}");
            std::process::exit(3)
        }
    }
}

fn child(mode: &str, writer: &str, path: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "durability_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, format!("{mode} {writer} {}", path.display()))
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    cmd
}

#[test]
fn failed_save_keeps_the_previous_file() {
    for writer in WRITERS {
        let dir = case_dir(&format!("fail-{writer}"));
        let path = dir.join("model.bin");
        write(writer, &path, false).unwrap();
        let old = std::fs::read(&path).unwrap();
        let out = child("fail", writer, &path).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{writer}: the save under a 64 KiB file-size limit must fail: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The error names the file.
        assert!(stdout.contains("model.bin"), "{writer}: {stdout}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            old,
            "{writer}: old file changed"
        );
        read_back(writer, &path).unwrap();
        assert_eq!(others(&dir, "model.bin"), Vec::<String>::new(), "{writer}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn killed_save_keeps_the_previous_file() {
    for writer in WRITERS {
        let dir = case_dir(&format!("kill-{writer}"));
        let path = dir.join("model.bin");
        write(writer, &path, false).unwrap();
        let old = std::fs::read(&path).unwrap();
        let mut proc = child("kill", writer, &path).spawn().unwrap();
        // Kill as soon as the temporary file exists (the save is under way).
        let start = Instant::now();
        let mut saw_temp = false;
        while start.elapsed() < Duration::from_secs(120) {
            if !others(&dir, "model.bin").is_empty() {
                saw_temp = true;
                break;
            }
            if proc.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        proc.kill().unwrap();
        let status = proc.wait().unwrap();
        let now = std::fs::read(&path).unwrap();
        if now != old {
            // The kill came after the rename: the new file must be complete, the temporary
            // file gone.
            assert!(status.success() || saw_temp, "{writer}");
            assert_eq!(others(&dir, "model.bin"), Vec::<String>::new(), "{writer}");
            eprintln!("{writer}: the save finished before the kill");
        } else {
            assert!(saw_temp, "{writer}: the child never started writing");
        }
        read_back(writer, &path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
