//! Downloading missing MNIST files from public mirrors.

use super::{check_file, FileSpec, FILES, MIRRORS};
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;
use tandem_tensor::{Error, Result};

/// Downloads each file of `missing` into `dir`, trying `mirrors` in order. Stops at the first
/// file that no mirror could provide and returns the error that tells the user what to do.
pub(crate) fn fetch(dir: &Path, missing: &[FileSpec], mirrors: &[&str]) -> Result<()> {
    let mut failures: Vec<String> = Vec::new();
    if mirrors.is_empty() {
        return Err(missing_error(dir, missing, &failures));
    }
    let existed = dir.exists();
    if let Err(e) = std::fs::create_dir_all(dir) {
        failures.push(format!("cannot create the folder: {e}"));
        return Err(missing_error(dir, missing, &failures));
    }
    let agent = agent();
    for (k, spec) in missing.iter().enumerate() {
        let mut done = false;
        for mirror in mirrors {
            let url = format!("{}/{}.gz", mirror.trim_end_matches('/'), spec.name);
            match download_one(&agent, &url, dir, spec) {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(e) => failures.push(format!("{url}: {e}")),
            }
        }
        if !done {
            if !existed {
                // Only succeeds if the folder we created is still empty.
                let _ = std::fs::remove_dir(dir);
            }
            return Err(missing_error(dir, &missing[k..], &failures));
        }
    }
    Ok(())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_resolve(Some(Duration::from_secs(15)))
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Downloads one file to a temporary name in `dir`, checks it, and renames it into place.
/// On any failure the temporary file is removed.
fn download_one(
    agent: &ureq::Agent,
    url: &str,
    dir: &Path,
    spec: &FileSpec,
) -> std::result::Result<(), String> {
    let final_path = dir.join(format!("{}.gz", spec.name));
    let tmp = dir.join(format!(".{}.gz.{}.part", spec.name, std::process::id()));
    let result = download_to(agent, url, &tmp, spec)
        .and_then(|()| check_file(&tmp, spec).map_err(|e| e.to_string()))
        .and_then(|()| {
            std::fs::rename(&tmp, &final_path)
                .map_err(|e| format!("cannot rename into {}: {e}", final_path.display()))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn download_to(
    agent: &ureq::Agent,
    url: &str,
    tmp: &Path,
    spec: &FileSpec,
) -> std::result::Result<(), String> {
    let response = agent.get(url).call().map_err(|e| e.to_string())?;
    // The compressed file is smaller than the decompressed one; allow some slack, never more.
    let limit = spec.bytes + (1 << 20);
    let declared = response.body().content_length();
    if let Some(len) = declared.filter(|&len| len > limit) {
        return Err(format!(
            "the server announces {len} bytes, more than the {limit} this file can take"
        ));
    }
    let bar = progress_bar(declared, spec.name);
    let write_error = |e: io::Error| format!("cannot write {}: {e}", tmp.display());
    let mut out = BufWriter::new(File::create(tmp).map_err(write_error)?);
    let mut body = response.into_body().into_reader().take(limit + 1);
    let mut buf = vec![0u8; 64 << 10];
    let mut total: u64 = 0;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                return Err(format!("download interrupted after {total} bytes: {e}"));
            }
        };
        out.write_all(&buf[..n]).map_err(write_error)?;
        total += n as u64;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    if total > limit {
        return Err(format!("more than {limit} bytes sent"));
    }
    if let Some(len) = declared.filter(|&len| len != total) {
        return Err(format!("got {total} of the {len} bytes announced"));
    }
    let file = out.into_inner().map_err(|e| write_error(e.into_error()))?;
    file.sync_all().map_err(write_error)?;
    Ok(())
}

fn progress_bar(len: Option<u64>, name: &str) -> ProgressBar {
    let bar = match len {
        Some(n) => {
            let bar = ProgressBar::new(n);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        }
        None => ProgressBar::new_spinner(),
    };
    bar.set_message(format!("downloading {name}.gz"));
    bar
}

/// The error for files that are neither present nor downloadable: which files, where, and
/// where to get them.
fn missing_error(dir: &Path, missing: &[FileSpec], failures: &[String]) -> Error {
    let names = |specs: &[FileSpec]| {
        specs
            .iter()
            .map(|s| format!("{}.gz", s.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let tried = if failures.is_empty() {
        "no download was attempted (no mirror given, or TANDEM_OFFLINE is set)".to_string()
    } else {
        format!("the download failed ({})", failures.join("; "))
    };
    let msg = format!(
        "MNIST files missing: {missing}, and {tried}. Put the four files {all} \
         (gzip-compressed, or decompressed without the .gz) into {dir}, or point the directory \
         argument or $MNIST_DIR at a folder that holds them. They can be obtained from {mirrors} \
         (the original MNIST of Y. LeCun, C. Cortes and C. Burges; its SHA-256 checksums are in \
         tandem_data::mnist::FILES).",
        missing = names(missing),
        all = names(&FILES),
        dir = dir.display(),
        mirrors = MIRRORS.join(" or "),
    );
    Error::Io {
        path: dir.display().to_string(),
        source: io::Error::new(io::ErrorKind::NotFound, msg),
    }
}
