//! The models directory: what is installed, installing a set, verifying it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::fetch;
use crate::manifest::{Conversion, Item, Manifest, Source};
use crate::verify::{file_sha256, tree_sha256};
use crate::{ModelsError, Progress};

const STAMPS: &str = ".verified.json";
const LOCK: &str = ".fetch.lock";
const STAGING_PREFIX: &str = ".staging-";

/// What we last verified about an installed item: if size and mtime still match, its hash does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    sha256: String,
    size: u64,
    mtime_ns: u128,
}

/// One item's verification: its id and whether its hash matched.
pub type VerifyRow = (String, Result<(), ModelsError>);

/// The state of one item in the models directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemState {
    /// Present and verified (by hash, or by an unchanged stamp of an earlier hash).
    Installed,
    /// Present but not verified since it last changed.
    Unverified,
    Missing,
}

pub struct ModelStore {
    root: PathBuf,
    manifest: Manifest,
}

impl ModelStore {
    /// The models directory: `$HARK_MODELS`, else `./models` when it holds a manifest (a
    /// checkout), else `~/.local/share/hark/models`.
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("HARK_MODELS") {
            return PathBuf::from(dir);
        }
        let local = PathBuf::from("models");
        if local.join("manifest.toml").is_file() {
            return local;
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        data.join("hark/models")
    }

    /// Opens `root` with the manifest built into this binary.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ModelsError> {
        Ok(ModelStore {
            root: root.into(),
            manifest: Manifest::builtin()?,
        })
    }

    pub fn with_manifest(root: impl Into<PathBuf>, manifest: Manifest) -> Self {
        ModelStore {
            root: root.into(),
            manifest,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn item(&self, id: &str) -> Result<&Item, ModelsError> {
        self.manifest
            .item(id)
            .ok_or_else(|| ModelsError::UnknownItem(id.to_string()))
    }

    /// Where item `id` lives, installed or not.
    pub fn path(&self, id: &str) -> Result<PathBuf, ModelsError> {
        Ok(self.root.join(&self.item(id)?.path))
    }

    /// The path of an installed item, or an error that says how to install it.
    pub fn require(&self, id: &str) -> Result<PathBuf, ModelsError> {
        let item = self.item(id)?;
        let path = self.root.join(&item.path);
        if !path.exists() {
            return Err(ModelsError::NotInstalled {
                id: id.to_string(),
                set: item.set.clone(),
                path,
            });
        }
        Ok(path)
    }

    /// Whether every item of `set` is installed and verified, without hashing anything.
    pub fn is_installed(&self, set: &str) -> Result<bool, ModelsError> {
        let stamps = self.load_stamps();
        Ok(self
            .manifest
            .closure(set)?
            .iter()
            .all(|i| self.state(i, &stamps) == ItemState::Installed))
    }

    pub fn states(&self, set: &str) -> Result<Vec<(&Item, ItemState)>, ModelsError> {
        let stamps = self.load_stamps();
        Ok(self
            .manifest
            .closure(set)?
            .into_iter()
            .map(|i| (i, self.state(i, &stamps)))
            .collect())
    }

    fn state(&self, item: &Item, stamps: &BTreeMap<String, Stamp>) -> ItemState {
        let path = self.root.join(&item.path);
        if !path.exists() {
            return ItemState::Missing;
        }
        match (stamps.get(&item.path), stamp_of(&path, &item.sha256)) {
            (Some(saved), Some(now)) if *saved == now => ItemState::Installed,
            _ => ItemState::Unverified,
        }
    }

    fn load_stamps(&self) -> BTreeMap<String, Stamp> {
        std::fs::read(self.root.join(STAMPS))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save_stamps(&self, stamps: &BTreeMap<String, Stamp>) -> Result<(), ModelsError> {
        let path = self.root.join(STAMPS);
        let tmp = self.root.join(format!("{STAMPS}.partial"));
        let text =
            serde_json::to_vec_pretty(stamps).map_err(|e| ModelsError::Manifest(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(|e| ModelsError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| ModelsError::io(&path, e))
    }

    /// Hashes every installed item of `set` in full; returns (item, ok, detail) rows.
    pub fn verify(&self, set: &str, progress: Progress) -> Result<Vec<VerifyRow>, ModelsError> {
        let _lock = if self.root.is_dir() {
            Some(self.lock()?)
        } else {
            None
        };
        let mut stamps = self.load_stamps();
        let mut rows = Vec::new();
        for item in self.manifest.closure(set)? {
            let path = self.root.join(&item.path);
            let result = if path.exists() {
                self.check_hash(item, &path, progress).map(|()| {
                    if let Some(s) = stamp_of(&path, &item.sha256) {
                        stamps.insert(item.path.clone(), s);
                    }
                })
            } else {
                Err(ModelsError::NotInstalled {
                    id: item.id.clone(),
                    set: item.set.clone(),
                    path,
                })
            };
            if result.is_err() {
                stamps.remove(&item.path);
            }
            rows.push((item.id.clone(), result));
        }
        if self.root.is_dir() {
            self.save_stamps(&stamps)?;
        }
        Ok(rows)
    }

    fn check_hash(&self, item: &Item, path: &Path, progress: Progress) -> Result<(), ModelsError> {
        let actual = if item.is_dir() {
            let bar = progress.step(format!("hashing {}", item.path));
            let h = tree_sha256(path)?;
            bar.finish_and_clear();
            h
        } else {
            let size = std::fs::metadata(path)
                .map_err(|e| ModelsError::io(path, e))?
                .len();
            let bar = progress.bytes(format!("hashing {}", item.path), size);
            let h = file_sha256(path, Some(&bar))?;
            bar.finish_and_clear();
            h
        };
        if actual != item.sha256 {
            return Err(ModelsError::HashMismatch {
                id: item.id.clone(),
                path: path.to_path_buf(),
                expected: item.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Installs every item of `set` that is missing or fails its hash (`force`: all of them).
    /// Returns how many items were installed; 0 means nothing needed doing.
    pub fn fetch(&self, set: &str, force: bool, progress: Progress) -> Result<usize, ModelsError> {
        let items = self.manifest.closure(set)?;
        std::fs::create_dir_all(&self.root).map_err(|e| ModelsError::io(&self.root, e))?;
        let _lock = self.lock()?;
        self.clean_leftovers();

        let mut stamps = self.load_stamps();
        let mut todo: Vec<&Item> = Vec::new();
        for item in items {
            let path = self.root.join(&item.path);
            let current = !force
                && match self.state(item, &stamps) {
                    ItemState::Installed => true,
                    ItemState::Missing => false,
                    ItemState::Unverified => self.check_hash(item, &path, progress).is_ok(),
                };
            if current {
                if let Some(s) = stamp_of(&path, &item.sha256) {
                    stamps.insert(item.path.clone(), s);
                }
            } else {
                todo.push(item);
            }
        }
        if todo.is_empty() {
            self.save_stamps(&stamps)?;
            return Ok(0);
        }
        progress.line(format!(
            "Installing {} model file(s) into {}",
            todo.len(),
            self.root.display()
        ));

        let staging = self
            .root
            .join(format!("{STAGING_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&staging).map_err(|e| ModelsError::io(&staging, e))?;
        let result = self.install(&todo, &staging, &mut stamps, progress);
        let _ = std::fs::remove_dir_all(&staging);
        self.save_stamps(&stamps)?;
        result.map(|()| todo.len())
    }

    fn install(
        &self,
        todo: &[&Item],
        staging: &Path,
        stamps: &mut BTreeMap<String, Stamp>,
        progress: Progress,
    ) -> Result<(), ModelsError> {
        // Which members each package must give, and where each goes in staging.
        let mut wanted: BTreeMap<&str, Vec<(String, PathBuf, bool)>> = BTreeMap::new();
        for item in todo {
            match item.source() {
                Source::Parts(parts) => {
                    for (i, m) in parts.iter().enumerate() {
                        let dest = staging.join(format!("{}.part{i}", item.id));
                        wanted
                            .entry(&m.package)
                            .or_default()
                            .push((m.member.clone(), dest, false));
                    }
                }
                Source::Dir(m) => {
                    let dest = staging.join(format!("{}.dir", item.id));
                    wanted
                        .entry(&m.package)
                        .or_default()
                        .push((m.member.clone(), dest, true));
                }
                Source::Convert(_) => {}
            }
        }
        for (n, (package_id, members)) in wanted.iter().enumerate() {
            let package = self
                .manifest
                .package(package_id)
                .ok_or_else(|| ModelsError::Manifest(format!("unknown package `{package_id}`")))?;
            let dir = staging.join(format!("download-{package_id}"));
            let bar = progress.step(format!(
                "[{}/{}] downloading {}",
                n + 1,
                wanted.len(),
                package.requirement()
            ));
            let archive = fetch::download(package, &dir)?;
            bar.set_message(format!(
                "[{}/{}] unpacking {}",
                n + 1,
                wanted.len(),
                package.requirement()
            ));
            let mut found = vec![false; members.len()];
            fetch::extract(package, &archive, |name| {
                members
                    .iter()
                    .enumerate()
                    .find_map(|(i, (member, dest, is_dir))| {
                        let hit = if *is_dir {
                            name.strip_prefix(member.as_str())
                                .and_then(|rest| rest.strip_prefix('/'))
                                .filter(|rest| is_plain_relative(rest))
                                .map(|rest| dest.join(rest))
                        } else {
                            (name == member).then(|| dest.clone())
                        };
                        if hit.is_some() {
                            found[i] = true;
                        }
                        hit
                    })
            })?;
            let _ = std::fs::remove_dir_all(&dir);
            if let Some(i) = found.iter().position(|f| !f) {
                return Err(ModelsError::MemberMissing {
                    package: package.requirement(),
                    member: members[i].0.clone(),
                });
            }
            progress.done(
                bar,
                format!("{} ({})", package.requirement(), package.license),
            );
        }

        for item in todo {
            let dest = self.root.join(&item.path);
            let partial = partial_path(&dest);
            if let Some(parent) = partial.parent() {
                std::fs::create_dir_all(parent).map_err(|e| ModelsError::io(parent, e))?;
            }
            match item.source() {
                Source::Parts(parts) => {
                    if parts.len() == 1 {
                        let src = staging.join(format!("{}.part0", item.id));
                        std::fs::rename(&src, &partial).map_err(|e| ModelsError::io(&src, e))?;
                    } else {
                        let bar = progress.step(format!(
                            "joining {} parts of {}",
                            parts.len(),
                            item.path
                        ));
                        join_parts(staging, item, parts.len(), &partial)?;
                        bar.finish_and_clear();
                    }
                }
                Source::Dir(_) => {
                    let src = staging.join(format!("{}.dir", item.id));
                    std::fs::rename(&src, &partial).map_err(|e| ModelsError::io(&src, e))?;
                }
                Source::Convert(conversion) => {
                    let bar = progress.step(format!("converting {}", item.path));
                    self.convert(conversion, &partial)?;
                    bar.finish_and_clear();
                }
            }
            if let Err(e) = self.check_hash(item, &partial, progress) {
                remove_any(&partial);
                return Err(match e {
                    ModelsError::HashMismatch {
                        id,
                        expected,
                        actual,
                        ..
                    } => ModelsError::HashMismatch {
                        id,
                        path: dest,
                        expected,
                        actual,
                    },
                    other => other,
                });
            }
            // A file is replaced atomically by the rename; a directory must go first.
            if dest.is_dir() {
                remove_any(&dest);
            }
            std::fs::rename(&partial, &dest).map_err(|e| ModelsError::io(&dest, e))?;
            if let Some(s) = stamp_of(&dest, &item.sha256) {
                stamps.insert(item.path.clone(), s);
            }
            let size = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
            let size_note = if item.is_dir() {
                String::new()
            } else {
                format!(", {:.1} MB", size as f64 / 1e6)
            };
            progress.line(format!(
                "  ✓ {} → {}{size_note}, sha256 ok",
                item.id, item.path
            ));
        }
        Ok(())
    }

    fn convert(&self, conversion: &Conversion, out: &Path) -> Result<(), ModelsError> {
        match conversion {
            Conversion::WhisperCt2ToGgml {
                model,
                mel_filters,
                vocab,
            } => {
                crate::whisper_ggml::convert(
                    &self.path(model)?,
                    &self.path(mel_filters)?,
                    &self.path(vocab)?,
                    out,
                )?;
            }
        }
        Ok(())
    }

    /// One fetch at a time per models directory (an advisory lock, released on exit).
    fn lock(&self) -> Result<File, ModelsError> {
        let path = self.root.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ModelsError::io(&path, e))?;
        file.lock().map_err(|e| ModelsError::io(&path, e))?;
        Ok(file)
    }

    /// Removes what an interrupted fetch left behind (we hold the lock, so none is running).
    fn clean_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(STAGING_PREFIX)
            {
                remove_any(&entry.path());
            }
        }
        for item in &self.manifest.items {
            remove_any(&partial_path(&self.root.join(&item.path)));
        }
    }
}

/// A member path that stays inside the directory it is unpacked into.
fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dest.with_file_name(name)
}

fn remove_any(path: &Path) {
    if path.is_dir() && !path.is_symlink() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

fn join_parts(staging: &Path, item: &Item, count: usize, out: &Path) -> Result<(), ModelsError> {
    let mut file = File::create(out).map_err(|e| ModelsError::io(out, e))?;
    for i in 0..count {
        let part = staging.join(format!("{}.part{i}", item.id));
        let mut src = File::open(&part).map_err(|e| ModelsError::io(&part, e))?;
        std::io::copy(&mut src, &mut file).map_err(|e| ModelsError::io(out, e))?;
        let _ = std::fs::remove_file(&part);
    }
    file.flush().map_err(|e| ModelsError::io(out, e))
}

/// Size and latest modification of a file, or summed over a directory tree (so an edit inside
/// a directory makes it unverified too).
fn stamp_of(path: &Path, sha256: &str) -> Option<Stamp> {
    fn walk(path: &Path, size: &mut u64, mtime: &mut u128, files: &mut u64) -> Option<()> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        let m = meta
            .modified()
            .ok()?
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_nanos();
        *mtime = (*mtime).max(m);
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).ok()? {
                walk(&entry.ok()?.path(), size, mtime, files)?;
            }
        } else {
            *size += meta.len();
            *files += 1;
        }
        Some(())
    }
    let (mut size, mut mtime_ns, mut files) = (0, 0, 0);
    walk(path, &mut size, &mut mtime_ns, &mut files)?;
    // Fold the file count in, so that a removed file with a same-sized sibling still shows.
    Some(Stamp {
        sha256: sha256.to_string(),
        size: size ^ (files << 48),
        mtime_ns,
    })
}
