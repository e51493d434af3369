//! The render budget: bounds on the work and the output of one render.

use std::fmt;
use std::io;

/// Bounds on one render, so that no input can make a render spin or fill memory.
///
/// Each body (`system_prompt`, `user_prompt_template`, each `content` of a `messages:` list,
/// and each few-shot example's input rendered through the user prompt) is rendered with its
/// own budget:
///
/// - `fuel`: the engine's instruction budget (minijinja's fuel; most instructions cost 1,
///   included templates and called macros draw on the same budget). A body that runs out
///   fails with [`TemplateError::RenderBudget`](crate::TemplateError::RenderBudget).
///   Bodies that are only text and `{{ variable }}` are rendered without the engine and
///   use no fuel.
/// - `max_bytes`: the longest rendered prompt, in bytes (UTF-8). Checked while rendering,
///   so an over-long body stops as soon as it passes the bound, and on the final prompts
///   (also the user prompt with its few-shot examples); for a `messages:` list, on each
///   rendered message (a history is inserted as given and not counted).
///
/// The defaults are far above what real prompts use: the shipped templates need at most
/// 63 units of fuel and 1,680 bytes of output (see `docs/TEMPLATE_FORMAT.md`).
///
/// ```
/// use prompt_templates::{RenderLimits, TemplateStore};
///
/// let dir = tempfile::tempdir()?;
/// let limits = RenderLimits { fuel: 50_000, ..RenderLimits::default() };
/// let store = TemplateStore::open(dir.path())?.with_limits(limits);
/// assert_eq!(store.limits().fuel, 50_000);
/// assert_eq!(store.limits().max_bytes, RenderLimits::DEFAULT_MAX_BYTES);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RenderLimits {
    /// The engine's instruction budget for one body; at least 1 (0 is taken as 1).
    pub fuel: u64,
    /// The longest rendered prompt, in bytes.
    pub max_bytes: usize,
}

impl RenderLimits {
    /// Default [`fuel`](Self::fuel): 1,000,000 instructions per body.
    ///
    /// Measured with `cargo nextest run -p prompt-templates --test budget --no-capture`
    /// (the least fuel each render succeeds with): the shipped templates in `templates/`
    /// need 33 to 63 (`writer/write_chapter` with `examples/chapter1.yaml`: 63); the test
    /// templates' bodies need less than that; a prompt listing 10,000 items with a few
    /// expressions each needs 150,002 (15 per item). At the default, a runaway body stops
    /// within a fraction of a second (0.15 s in a debug build).
    pub const DEFAULT_FUEL: u64 = 1_000_000;

    /// Default [`max_bytes`](Self::max_bytes): 16 MiB per prompt.
    ///
    /// The shipped templates render to at most 1,680 bytes (with their few-shot examples);
    /// 16 MiB is several times the text the largest model context holds.
    pub const DEFAULT_MAX_BYTES: usize = 16 * 1024 * 1024;

    /// No practical bound (`u64::MAX / 2` fuel, `usize::MAX` bytes), for trusted callers.
    pub const UNLIMITED: RenderLimits = RenderLimits {
        fuel: u64::MAX / 2,
        max_bytes: usize::MAX,
    };

    /// The fuel the engine is given: at least 1, at most what its counter holds.
    pub(crate) fn engine_fuel(&self) -> u64 {
        self.fuel.clamp(1, isize::MAX as u64)
    }
}

impl Default for RenderLimits {
    fn default() -> Self {
        Self {
            fuel: Self::DEFAULT_FUEL,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}

/// Which bound of a [`RenderLimits`] a render ran past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RenderBudget {
    /// The body used up its fuel (the value is the budget).
    Fuel(u64),
    /// The prompt grew past this many bytes.
    MaxBytes(usize),
}

impl fmt::Display for RenderBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fuel(n) => write!(
                f,
                "ran out of render fuel (budget: {n} instructions; RenderLimits::fuel, `render_fuel` in the config)"
            ),
            Self::MaxBytes(n) => write!(
                f,
                "output is longer than the render budget of {n} bytes (RenderLimits::max_bytes, `max_render_bytes` in the config)"
            ),
        }
    }
}

/// An output buffer that refuses to grow past `max` bytes; the engine's render stops at
/// the first write that would.
#[derive(Debug)]
pub(crate) struct CappedOutput {
    pub(crate) buf: Vec<u8>,
    max: usize,
    pub(crate) over: bool,
}

impl CappedOutput {
    pub(crate) fn new(capacity: usize, max: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity.min(max)),
            max,
            over: false,
        }
    }
}

impl io::Write for CappedOutput {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if bytes.len() > self.max - self.buf.len() {
            self.over = true;
            return Err(io::Error::other("render output budget exceeded"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write(bytes).map(|_| ())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
