//! `CacheKey`: a SHA-256 digest over a canonical, unambiguous encoding of a whole request.
//!
//! # Encoding
//!
//! Every field is written as a one-byte tag followed by its content; strings and byte runs
//! are prefixed with their length as a little-endian `u64`, so no two different field
//! sequences can produce the same byte stream. Messages are streamed in conversation order
//! (role and content, system message included). At [`CacheKeyBuilder::finish`] the remaining
//! fields are written in a fixed order: provider, model, temperature, max tokens, seed, stop
//! sequences, response format and the other options sorted by name. JSON values are encoded
//! structurally with object keys sorted (recursively) and numbers normalised (`1`, `1.0` and
//! `1e0` encode alike; `-0.0` is `0`). Absent (`None`) and present-but-zero (`Some(0)`) differ.
//! An empty `stop` list is the same as no stop list.
//!
//! # Prefix reuse
//!
//! Because the namespace and then the messages come first, the SHA-256 state after the first
//! message (a template's or an agent's system prompt, usually most of the request's bytes)
//! depends on nothing else. [`CacheKeyPrefixes`] keeps that state per distinct first message,
//! so a request that starts like an earlier one hashes only the rest; the key is the same as
//! the plain [`CacheKeyBuilder`]'s, byte for byte.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use parking_lot::Mutex;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Version tag mixed into every key; bump it when the encoding changes.
const DOMAIN: &[u8] = b"promptkit.cache-key.v1\0";

/// A 32-byte SHA-256 digest identifying one request; shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// Starts a key for a request in `namespace` (for example an application or agent name).
    pub fn builder(namespace: &str) -> CacheKeyBuilder {
        CacheKeyBuilder::new(namespace)
    }

    /// The key as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Builds a key from raw digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        // hex::encode_to_slice only fails on a wrong output length, which is fixed here.
        if hex::encode_to_slice(self.0, &mut buf).is_err() {
            return Err(fmt::Error);
        }
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

/// The text given to [`CacheKey::from_str`] was not 64 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cache key {input:?}: expected 64 lowercase hex characters")]
pub struct ParseKeyError {
    /// The rejected input (cut to 80 characters).
    pub input: String,
}

/// The value of each lowercase hex digit; 0xff for every other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

impl FromStr for CacheKey {
    type Err = ParseKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseKeyError {
            input: s.chars().take(80).collect(),
        };
        let digits = s.as_bytes();
        if digits.len() != 64 {
            return Err(err());
        }
        let mut out = [0u8; 32];
        let mut bad = 0u8;
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let (hi, lo) = (
                HEX_VALUE[usize::from(pair[0])],
                HEX_VALUE[usize::from(pair[1])],
            );
            bad |= (hi | lo) & 0xf0;
            *byte = (hi << 4) | (lo & 0x0f);
        }
        if bad != 0 {
            return Err(err());
        }
        Ok(Self(out))
    }
}

impl Serialize for CacheKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CacheKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Parsed from the borrowed text: no `String` per key.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = CacheKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 lowercase hex characters")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CacheKey, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

// Field tags of the canonical encoding.
const T_NAMESPACE: u8 = b'N';
const T_MESSAGE: u8 = b'm';
const T_END_MESSAGES: u8 = b'E';
const T_PROVIDER: u8 = b'P';
const T_MODEL: u8 = b'M';
const T_TEMPERATURE: u8 = b'T';
const T_MAX_TOKENS: u8 = b'X';
const T_SEED: u8 = b'S';
const T_STOP: u8 = b's';
const T_FORMAT: u8 = b'F';
const T_OPTIONS: u8 = b'O';

/// Builds a [`CacheKey`]; owned and chainable. Messages are hashed in call order; every other
/// setter may be called in any order (a repeated call replaces the earlier value).
#[derive(Clone)]
pub struct CacheKeyBuilder {
    hasher: Sha256,
    messages: u64,
    provider: Option<String>,
    model: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<u64>,
    seed: Option<u64>,
    stop: Vec<String>,
    response_format: Option<Value>,
    options: BTreeMap<String, Value>,
}

impl fmt::Debug for CacheKeyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheKeyBuilder")
            .field("messages", &self.messages)
            .field("provider", &self.provider)
            .field("model", &self.model)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("seed", &self.seed)
            .field("stop", &self.stop)
            .field("response_format", &self.response_format)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl CacheKeyBuilder {
    fn new(namespace: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(DOMAIN);
        hasher.update([T_NAMESPACE]);
        put_str(&mut hasher, namespace);
        Self {
            hasher,
            messages: 0,
            provider: None,
            model: None,
            temperature: None,
            max_tokens: None,
            seed: None,
            stop: Vec::new(),
            response_format: None,
            options: BTreeMap::new(),
        }
    }

    /// The provider name (`ollama`, `openai`, ...).
    pub fn provider(mut self, provider: &str) -> Self {
        self.provider = Some(provider.to_owned());
        self
    }

    /// The model name.
    pub fn model(mut self, model: &str) -> Self {
        self.model = Some(model.to_owned());
        self
    }

    /// Adds one message, in conversation order (the system message included).
    pub fn message(mut self, role: &str, content: &str) -> Self {
        self.hasher.update([T_MESSAGE]);
        put_str(&mut self.hasher, role);
        put_str(&mut self.hasher, content);
        self.messages += 1;
        self
    }

    /// The sampling temperature (`None`: the provider's default).
    pub fn temperature(mut self, temperature: Option<f64>) -> Self {
        self.temperature = temperature;
        self
    }

    /// The completion token limit.
    pub fn max_tokens(mut self, max_tokens: Option<u64>) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// The sampling seed.
    pub fn seed(mut self, seed: Option<u64>) -> Self {
        self.seed = seed;
        self
    }

    /// Stop sequences, in the order given to the provider (empty: none).
    pub fn stop(mut self, stop: &[String]) -> Self {
        self.stop = stop.to_vec();
        self
    }

    /// The response format or JSON schema, if any.
    pub fn response_format(mut self, format: Option<&Value>) -> Self {
        self.response_format = format.cloned();
        self
    }

    /// Any other provider option (`top_p`, `num_ctx`, ...); options are sorted by name.
    pub fn option(mut self, name: &str, value: &Value) -> Self {
        self.options.insert(name.to_owned(), value.clone());
        self
    }

    /// Computes the key.
    pub fn finish(self) -> CacheKey {
        let Self {
            mut hasher,
            messages,
            provider,
            model,
            temperature,
            max_tokens,
            seed,
            stop,
            response_format,
            options,
        } = self;
        let h = &mut hasher;
        h.update([T_END_MESSAGES]);
        h.update(messages.to_le_bytes());
        h.update([T_PROVIDER]);
        put_opt_str(h, provider.as_deref());
        h.update([T_MODEL]);
        put_opt_str(h, model.as_deref());
        h.update([T_TEMPERATURE]);
        match temperature {
            None => h.update([0]),
            Some(t) => {
                h.update([1]);
                put_number(h, t);
            }
        }
        h.update([T_MAX_TOKENS]);
        put_opt_u64(h, max_tokens);
        h.update([T_SEED]);
        put_opt_u64(h, seed);
        h.update([T_STOP]);
        h.update((stop.len() as u64).to_le_bytes());
        for s in &stop {
            put_str(h, s);
        }
        h.update([T_FORMAT]);
        match &response_format {
            None => h.update([0]),
            Some(v) => {
                h.update([1]);
                put_json(h, v);
            }
        }
        h.update([T_OPTIONS]);
        h.update((options.len() as u64).to_le_bytes());
        for (name, value) in &options {
            put_str(h, name);
            put_json(h, value);
        }
        CacheKey(hasher.finalize().into())
    }
}

/// First messages shorter than this are hashed directly: looking them up costs about as much.
const PREFIX_MIN_BYTES: usize = 256;

/// Distinct first messages kept by default (each costs its text plus about 200 bytes).
const PREFIXES_KEPT: usize = 256;

/// The SHA-256 state after a namespace and a first message, with what it was computed from.
#[derive(Debug)]
struct KeyPrefix {
    namespace: Box<str>,
    role: Box<str>,
    content: Box<str>,
    state: CacheKeyBuilder,
}

/// Hashing states after a request's first message (the system prompt of a template or an
/// agent), kept so that requests starting with the same message hash only the rest.
///
/// [`builder`](Self::builder) returns exactly `CacheKey::builder(namespace).message(role,
/// content)`: the keys do not change. A kept state is found by a fast non-cryptographic hash
/// of its inputs and used only if the inputs are equal byte for byte. At most a fixed number of
/// states are kept (the set starts over when full); short messages are not kept.
///
/// ```
/// use prompt_cache::{CacheKey, CacheKeyPrefixes};
///
/// let prefixes = CacheKeyPrefixes::default();
/// let system = "You are the Writer. ".repeat(40);
/// for chapter in 1..=3 {
///     let user = format!("Write chapter {chapter}.");
///     let reused = prefixes.builder("writer", "system", &system).message("user", &user).finish();
///     let plain = CacheKey::builder("writer").message("system", &system).message("user", &user).finish();
///     assert_eq!(reused, plain);
/// }
/// ```
#[derive(Debug)]
pub struct CacheKeyPrefixes {
    kept: Mutex<HashMap<u64, Arc<KeyPrefix>>>,
    capacity: usize,
}

impl Default for CacheKeyPrefixes {
    fn default() -> Self {
        Self::new(PREFIXES_KEPT)
    }
}

impl CacheKeyPrefixes {
    /// Keeps at most `capacity` first messages (0 keeps none: every key is hashed in full).
    pub fn new(capacity: usize) -> Self {
        Self {
            kept: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// `CacheKey::builder(namespace).message(role, content)`, from a kept state when this first
    /// message was seen before.
    pub fn builder(&self, namespace: &str, role: &str, content: &str) -> CacheKeyBuilder {
        if content.len() < PREFIX_MIN_BYTES || self.capacity == 0 {
            return CacheKey::builder(namespace).message(role, content);
        }
        let id = {
            use xxhash_rust::xxh3::Xxh3;
            let mut h = Xxh3::new();
            for part in [namespace, role, content] {
                h.update(&(part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
            h.digest()
        };
        let found = self.kept.lock().get(&id).cloned();
        if let Some(p) = found
            && *p.content == *content
            && *p.role == *role
            && *p.namespace == *namespace
        {
            return p.state.clone();
        }
        let state = CacheKey::builder(namespace).message(role, content);
        let prefix = Arc::new(KeyPrefix {
            namespace: namespace.into(),
            role: role.into(),
            content: content.into(),
            state: state.clone(),
        });
        let mut kept = self.kept.lock();
        if kept.len() >= self.capacity {
            kept.clear();
        }
        kept.insert(id, prefix);
        state
    }
}

fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

fn put_opt_str(h: &mut Sha256, s: Option<&str>) {
    match s {
        None => h.update([0]),
        Some(s) => {
            h.update([1]);
            put_str(h, s);
        }
    }
}

fn put_opt_u64(h: &mut Sha256, v: Option<u64>) {
    match v {
        None => h.update([0]),
        Some(v) => {
            h.update([1]);
            h.update(v.to_le_bytes());
        }
    }
}

/// Writes a number so that integral values encode as integers whatever their JSON spelling.
fn put_number(h: &mut Sha256, x: f64) {
    // 2^63 bounds the range where f64 -> i64 is exact for integral values.
    if x.fract() == 0.0 && x.abs() < 9_223_372_036_854_775_808.0 {
        h.update([b'i']);
        h.update((x as i64).to_le_bytes());
    } else if x.is_nan() {
        h.update([b'f']);
        h.update(f64::NAN.to_bits().to_le_bytes());
    } else {
        h.update([b'f']);
        h.update(x.to_bits().to_le_bytes());
    }
}

fn put_json(h: &mut Sha256, v: &Value) {
    match v {
        Value::Null => h.update([b'n']),
        Value::Bool(false) => h.update([b'0']),
        Value::Bool(true) => h.update([b'1']),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                h.update([b'i']);
                h.update(i.to_le_bytes());
            } else if let Some(u) = n.as_u64() {
                // Only values above i64::MAX get here.
                h.update([b'u']);
                h.update(u.to_le_bytes());
            } else if let Some(f) = n.as_f64() {
                put_number(h, f);
            } else {
                // Arbitrary-precision numbers: fall back to their text.
                h.update([b'd']);
                put_str(h, &n.to_string());
            }
        }
        Value::String(s) => {
            h.update([b's']);
            put_str(h, s);
        }
        Value::Array(items) => {
            h.update([b'a']);
            h.update((items.len() as u64).to_le_bytes());
            for item in items {
                put_json(h, item);
            }
        }
        Value::Object(map) => {
            h.update([b'o']);
            h.update((map.len() as u64).to_le_bytes());
            // Sort explicitly: serde_json's map keeps insertion order under `preserve_order`.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            for (k, v) in entries {
                put_str(h, k);
                put_json(h, v);
            }
        }
    }
}
