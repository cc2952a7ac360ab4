//! Hashing: files by sha256, directory trees by a hash over their sorted listing.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use crate::ModelsError;

/// sha256 of a file, advancing `progress` by the bytes read.
pub fn file_sha256(path: &Path, progress: Option<&ProgressBar>) -> Result<String, ModelsError> {
    let io = |e| ModelsError::io(path, e);
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(p) = progress {
            p.inc(n as u64);
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A directory's identity: sha256 over lines `relative/path<TAB>sha256-of-file`, sorted by path.
/// Symbolic links hash as `path<TAB>-> target`; empty directories do not count.
pub fn tree_sha256(root: &Path) -> Result<String, ModelsError> {
    let mut lines = Vec::new();
    walk(root, root, &mut lines)?;
    lines.sort();
    let mut hasher = Sha256::new();
    for line in lines {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    Ok(hex::encode(hasher.finalize()))
}

fn walk(root: &Path, dir: &Path, lines: &mut Vec<String>) -> Result<(), ModelsError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ModelsError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ModelsError::io(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| ModelsError::io(&path, e))?;
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        if kind.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| ModelsError::io(&path, e))?;
            lines.push(format!("{rel}\t-> {}", target.display()));
        } else if kind.is_dir() {
            walk(root, &path, lines)?;
        } else {
            lines.push(format!("{rel}\t{}", file_sha256(&path, None)?));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_hash_sees_content_and_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), b"one").unwrap();
        std::fs::write(dir.path().join("b"), b"two").unwrap();
        let first = tree_sha256(dir.path()).unwrap();
        assert_eq!(first, tree_sha256(dir.path()).unwrap());
        std::fs::write(dir.path().join("b"), b"twO").unwrap();
        assert_ne!(first, tree_sha256(dir.path()).unwrap());
        std::fs::write(dir.path().join("b"), b"two").unwrap();
        std::fs::rename(dir.path().join("b"), dir.path().join("c")).unwrap();
        assert_ne!(first, tree_sha256(dir.path()).unwrap());
    }

    #[test]
    fn file_hash_matches_known_vector() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            file_sha256(&p, None).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
