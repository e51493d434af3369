//! The template store: find, load once, serve from memory.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::TemplateError;
use crate::labels::{Labels, is_label_name};
use crate::limits::RenderLimits;
use crate::lint::Severity;
use crate::parse::{Checks, is_plain_name, parse_file, parse_version_number, split_file_name};
use crate::template::PromptTemplate;

/// Which version of a template to load.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum VersionReq {
    /// The highest `N` among `<task>_v<N>.yaml`.
    #[default]
    Latest,
    /// Exactly `<task>_v<N>.yaml`.
    Exact(u32),
    /// The version a label names in `<dir>/labels.toml` (`production`, `staging`), resolved
    /// when the template is loaded ([`TemplateStore::resolve`]).
    Label(String),
}

impl FromStr for VersionReq {
    type Err = TemplateError;

    /// Parses `latest`, `N` or `vN` (N from 1), or a label: a name of letters, digits, `_`
    /// and `-` that starts with a letter and is neither of those ([`is_label_name`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("latest") {
            return Ok(Self::Latest);
        }
        let digits = t.strip_prefix(['v', 'V']).unwrap_or(t);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return digits
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .map(Self::Exact)
                .ok_or_else(|| TemplateError::InvalidVersionReq(s.to_owned()));
        }
        if is_label_name(t) {
            return Ok(Self::Label(t.to_owned()));
        }
        Err(TemplateError::InvalidVersionReq(s.to_owned()))
    }
}

impl fmt::Display for VersionReq {
    /// `latest` or `vN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("latest"),
            Self::Exact(n) => write!(f, "v{n}"),
            Self::Label(name) => f.write_str(name),
        }
    }
}

/// A template file found by [`TemplateStore::list`] (not parsed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct TemplateInfo {
    /// The agent (folder).
    pub agent: String,
    /// The task.
    pub task: String,
    /// The version `N`.
    pub version: u32,
    /// The file.
    pub path: PathBuf,
}

/// FNV-1a: agent and task names are short, so a lookup hashes in a few nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type FastMap<V> = HashMap<String, V, BuildHasherDefault<Fnv>>;

#[derive(Debug, Default)]
struct Slot {
    latest: Option<Arc<PromptTemplate>>,
    versions: Vec<(u32, Arc<PromptTemplate>)>,
}

impl Slot {
    fn exact(&self, version: u32) -> Option<&Arc<PromptTemplate>> {
        self.versions
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, t)| t)
    }
}

/// Templates under one directory (`<dir>/<agent>/<task>_v<N>.yaml`), each read, parsed and
/// compiled once and then served from memory as an `Arc`.
///
/// `Send + Sync`: share it in an `Arc` between threads. `load` with [`VersionReq::Latest`]
/// resolves the latest version on first use and serves it from memory after; `reload` reads
/// the disk again.
///
/// Every template it loads renders within its [`RenderLimits`]: the defaults from
/// [`open`](Self::open), others from [`with_limits`](Self::with_limits).
pub struct TemplateStore {
    dir: PathBuf,
    limits: RenderLimits,
    cache: RwLock<FastMap<FastMap<Slot>>>,
    /// The labels file as last read, with the stamp of the file it was read from.
    labels: RwLock<Option<(FileStamp, Arc<Labels>)>>,
}

/// What tells a file's versions apart without reading it: size, inode and modification time
/// (a file replaced by a rename gets a new inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    inode: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            len: meta.len(),
            inode,
            modified: meta.modified().ok(),
        }
    }
}

impl fmt::Debug for TemplateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached: usize = self
            .cache
            .read()
            .values()
            .flat_map(|tasks| tasks.values())
            .map(|s| s.versions.len())
            .sum();
        f.debug_struct("TemplateStore")
            .field("dir", &self.dir)
            .field("limits", &self.limits)
            .field("cached", &cached)
            .finish()
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), TemplateError> {
    if is_plain_name(name) {
        return Ok(());
    }
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.contains(['/', '\\']) || name.contains("..") {
        "paths and separators are not allowed, only letters, digits, `_` and `-`"
    } else {
        "only letters, digits, `_` and `-` are allowed"
    };
    Err(TemplateError::InvalidName {
        what,
        name: name.to_owned(),
        reason,
    })
}

impl TemplateStore {
    /// Opens the template directory (it must exist; nothing is read yet). Templates render
    /// with [`RenderLimits::default()`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, TemplateError> {
        let dir = dir.as_ref().to_path_buf();
        let meta = std::fs::metadata(&dir).map_err(|source| TemplateError::Io {
            path: dir.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(TemplateError::Io {
                path: dir,
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        Ok(Self {
            dir,
            limits: RenderLimits::default(),
            cache: RwLock::new(FastMap::default()),
            labels: RwLock::new(None),
        })
    }

    /// The same store with another render budget for every template it loads from now on
    /// (templates already in memory are dropped, so they are loaded again with it).
    #[must_use]
    pub fn with_limits(mut self, limits: RenderLimits) -> Self {
        self.limits = limits;
        self.cache.get_mut().clear();
        self
    }

    /// The render budget of the templates this store loads.
    pub fn limits(&self) -> RenderLimits {
        self.limits
    }

    /// The template directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The template, from memory when it was loaded before, else read, parsed and compiled.
    ///
    /// Fails when a name is not a plain identifier, the file does not exist, or it has an
    /// error in its YAML, fields, declarations, file name or Jinja syntax. The slower analysis
    /// (variables used but not declared, example inputs, warnings) is left to
    /// [`lint`](crate::lint); a variable used but not declared still fails at render time.
    pub fn load(
        &self,
        agent: &str,
        task: &str,
        version: VersionReq,
    ) -> Result<Arc<PromptTemplate>, TemplateError> {
        check_name("agent", agent)?;
        check_name("task", task)?;
        let version = self.resolve(agent, task, version)?;
        if let Some(found) = self.cached(agent, task, &version) {
            return Ok(found);
        }
        let template = self.read(agent, task, &version)?;
        Ok(self.insert(agent, task, &version, template, false))
    }

    /// Like [`load`](Self::load) but always reads the disk, and replaces what memory holds.
    pub fn reload(
        &self,
        agent: &str,
        task: &str,
        version: VersionReq,
    ) -> Result<Arc<PromptTemplate>, TemplateError> {
        check_name("agent", agent)?;
        check_name("task", task)?;
        let version = self.resolve(agent, task, version)?;
        let template = self.read(agent, task, &version)?;
        Ok(self.insert(agent, task, &version, template, true))
    }

    /// Every template file (`<agent>/<task>_v<N>.yaml`) of one agent or of all, sorted by
    /// agent, task and version. Files are not parsed; an agent without a folder has none.
    pub fn list(&self, agent: Option<&str>) -> Result<Vec<TemplateInfo>, TemplateError> {
        let agents = match agent {
            Some(agent) => {
                check_name("agent", agent)?;
                vec![agent.to_owned()]
            }
            None => {
                let mut agents = Vec::new();
                for entry in read_dir(&self.dir)? {
                    let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                    if let Some(name) = entry.file_name().to_str()
                        && is_dir
                        && is_plain_name(name)
                    {
                        agents.push(name.to_owned());
                    }
                }
                agents
            }
        };
        let mut out = Vec::new();
        for agent in agents {
            let agent_dir = self.dir.join(&agent);
            if !agent_dir.is_dir() {
                continue;
            }
            for entry in read_dir(&agent_dir)? {
                let Some(file_name) = entry.file_name().to_str().map(ToOwned::to_owned) else {
                    continue;
                };
                if let Some((task, version)) = split_file_name(&file_name) {
                    out.push(TemplateInfo {
                        agent: agent.clone(),
                        task: task.to_owned(),
                        version,
                        path: entry.path(),
                    });
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The labels file of this directory (`<dir>/labels.toml`) as it is now: read again when
    /// its size, inode or modification time changed since the last read, else from memory. A
    /// directory without one has no labels.
    pub fn labels(&self) -> Result<Arc<Labels>, TemplateError> {
        let path = self.labels_path();
        let stamp = match std::fs::metadata(&path) {
            Ok(meta) => FileStamp::of(&meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Arc::new(Labels::default()));
            }
            Err(source) => return Err(TemplateError::Io { path, source }),
        };
        if let Some((seen, labels)) = self.labels.read().as_ref()
            && *seen == stamp
        {
            return Ok(Arc::clone(labels));
        }
        let labels = Arc::new(Labels::read(&path)?);
        *self.labels.write() = Some((stamp, Arc::clone(&labels)));
        Ok(labels)
    }

    /// Where this directory's labels live: `<dir>/labels.toml`.
    pub fn labels_path(&self) -> PathBuf {
        self.dir.join(crate::labels::LABELS_FILE)
    }

    /// The version a requirement names: a [`VersionReq::Label`] becomes the
    /// [`VersionReq::Exact`] version the labels file gives it (checked at each call, so a
    /// label moved by another process takes effect at the next load); the others are returned
    /// as they are. An unknown label is [`TemplateError::UnknownLabel`].
    pub fn resolve(
        &self,
        agent: &str,
        task: &str,
        version: VersionReq,
    ) -> Result<VersionReq, TemplateError> {
        match version {
            VersionReq::Label(label) => {
                let labels = self.labels()?;
                match labels.get(agent, task, &label) {
                    Some(n) => Ok(VersionReq::Exact(n)),
                    None => Err(TemplateError::UnknownLabel {
                        template: format!("{agent}/{task}"),
                        known: labels
                            .of(agent, task)
                            .map(|(name, _)| name.to_owned())
                            .collect(),
                        label,
                        path: self.labels_path(),
                    }),
                }
            }
            other => Ok(other),
        }
    }

    /// Points `label` of `agent/task` at `version` in `<dir>/labels.toml` (written to a
    /// temporary file and renamed into place) and returns the version it named before. The
    /// version must load (its file exists and is valid).
    pub fn set_label(
        &self,
        agent: &str,
        task: &str,
        label: &str,
        version: u32,
    ) -> Result<Option<u32>, TemplateError> {
        check_name("agent", agent)?;
        check_name("task", task)?;
        if !is_label_name(label) {
            return Err(TemplateError::InvalidLabel(label.to_owned()));
        }
        self.load(agent, task, VersionReq::Exact(version))?;
        // The file is edited in place, not rewritten: the user's comments and layout stay.
        let path = self.labels_path();
        let text = crate::labels::read_text(&path)?;
        let before = Labels::parse(&path, &text)?.get(agent, task, label);
        let edited = crate::labels::set_in_text(&path, &text, agent, task, label, version)?;
        // What is written must read back as a labels file naming the new version.
        if Labels::parse(&path, &edited)?.get(agent, task, label) != Some(version) {
            return Err(TemplateError::Labels {
                path,
                line: 1,
                message: format!("cannot set `{label}` of {agent}/{task} in this file's layout"),
            });
        }
        crate::labels::write_file(&path, &edited)?;
        *self.labels.write() = None;
        Ok(before)
    }

    fn cached(&self, agent: &str, task: &str, version: &VersionReq) -> Option<Arc<PromptTemplate>> {
        let cache = self.cache.read();
        let slot = cache.get(agent)?.get(task)?;
        match version {
            VersionReq::Latest => slot.latest.clone(),
            VersionReq::Exact(n) => slot.exact(*n).cloned(),
            VersionReq::Label(_) => None,
        }
    }

    /// Puts a freshly read template in memory. Without `replace`, a template another thread
    /// put there first wins, so every caller shares one `Arc`.
    fn insert(
        &self,
        agent: &str,
        task: &str,
        version: &VersionReq,
        template: PromptTemplate,
        replace: bool,
    ) -> Arc<PromptTemplate> {
        let mut cache = self.cache.write();
        let slot = cache
            .entry(agent.to_owned())
            .or_default()
            .entry(task.to_owned())
            .or_default();
        let n = template.version;
        let shared = match slot.exact(n) {
            Some(existing) if !replace => Arc::clone(existing),
            _ => {
                let fresh = Arc::new(template);
                slot.versions.retain(|(v, _)| *v != n);
                slot.versions.push((n, Arc::clone(&fresh)));
                if slot.latest.as_ref().is_some_and(|l| l.version == n) {
                    slot.latest = Some(Arc::clone(&fresh));
                }
                fresh
            }
        };
        if *version == VersionReq::Latest {
            match &slot.latest {
                Some(existing) if !replace => return Arc::clone(existing),
                _ => slot.latest = Some(Arc::clone(&shared)),
            }
        }
        shared
    }

    fn versions_on_disk(&self, agent: &str, task: &str) -> Result<Vec<u32>, TemplateError> {
        let agent_dir = self.dir.join(agent);
        let mut versions = Vec::new();
        let entries = match std::fs::read_dir(&agent_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(versions),
            Err(source) => {
                return Err(TemplateError::Io {
                    path: agent_dir,
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str()
                && let Some(n) = name
                    .strip_prefix(task)
                    .and_then(|rest| rest.strip_prefix("_v"))
                    .and_then(|rest| rest.strip_suffix(".yaml"))
                    .and_then(parse_version_number)
            {
                versions.push(n);
            }
        }
        versions.sort_unstable();
        Ok(versions)
    }

    fn read(
        &self,
        agent: &str,
        task: &str,
        version: &VersionReq,
    ) -> Result<PromptTemplate, TemplateError> {
        let not_found = |available: Vec<u32>| TemplateError::NotFound {
            agent: agent.to_owned(),
            task: task.to_owned(),
            version: version.to_string(),
            dir: self.dir.clone(),
            available,
        };
        let n = match version {
            VersionReq::Exact(n) => *n,
            // Resolved by `load` and `reload` before they read.
            VersionReq::Label(_) => return Err(not_found(self.versions_on_disk(agent, task)?)),
            VersionReq::Latest => match self.versions_on_disk(agent, task)?.last() {
                Some(n) => *n,
                None => return Err(not_found(Vec::new())),
            },
        };
        let path = self.dir.join(agent).join(format!("{task}_v{n}.yaml"));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_found(self.versions_on_disk(agent, task)?));
            }
            Err(source) => return Err(TemplateError::Io { path, source }),
        };
        let parsed = parse_file(&path, &bytes, Checks::Load);
        match parsed.template {
            Some(mut template) => {
                template.set_limits(self.limits);
                Ok(template)
            }
            None => Err(TemplateError::Invalid {
                path,
                diagnostics: parsed
                    .diagnostics
                    .into_iter()
                    .filter(|d| d.severity == Severity::Error)
                    .collect(),
            }),
        }
    }
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, TemplateError> {
    let io = |source| TemplateError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map_err(io))
        .collect()
}
