//! Prices of models and the one rule that turns a call's token counts into dollars.
//!
//! # The price file
//!
//! A TOML file of USD per million tokens, keyed by model name or glob (`*` any run of
//! characters, `?` one character):
//!
//! ```toml
//! [prices."gpt-4o*"]
//! input = 2.50
//! cached_input = 1.25   # defaults to input
//! output = 10.00
//! reasoning = 10.00     # defaults to output
//! ```
//!
//! The first key in file order that matches a model gives its price. A user's table is read
//! before the shipped one ([`SHIPPED_PRICES`], dated by its `prices_date`), so the user's keys
//! win and the shipped ones fill in the rest. Unknown fields, negative or non-finite prices are
//! errors naming the file, the key and the field.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

use crate::MetricsError;

/// The shipped price table (`prices.toml` of this crate): widely used hosted models, with the
/// date the prices were taken from the providers' pages in `prices_date`.
pub const SHIPPED_PRICES: &str = include_str!("../prices.toml");

/// Tokens per million, the unit of every price.
const PER_MILLION: f64 = 1_000_000.0;

/// The price of one model, USD per million tokens of each class.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Prompt tokens that were not read from the provider's prompt cache.
    pub input: f64,
    /// Prompt tokens read from the provider's prompt cache; `input` when not given.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Completion tokens that are not reasoning tokens.
    pub output: f64,
    /// Reasoning tokens (counted by the provider within the completion); `output` when not
    /// given.
    #[serde(default)]
    pub reasoning: Option<f64>,
}

/// A call's token counts, as the provider reported them.
///
/// As in OpenAI's usage, `prompt` includes `cached` and `completion` includes `reasoning`;
/// [`Price::cost`] prices each token once, in its own class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Prompt tokens, cached ones included.
    pub prompt: u64,
    /// Completion tokens, reasoning ones included.
    pub completion: u64,
    /// Of the prompt tokens, those read from the provider's prompt cache.
    pub cached: u64,
    /// Of the completion tokens, those spent on reasoning.
    pub reasoning: u64,
}

impl TokenUsage {
    /// Usage from a record's optional counts; `None` when neither the prompt nor the completion
    /// count is known (nothing to price). A missing count of a class is 0.
    pub fn from_counts(
        prompt: Option<u64>,
        completion: Option<u64>,
        cached: Option<u64>,
        reasoning: Option<u64>,
    ) -> Option<TokenUsage> {
        if prompt.is_none() && completion.is_none() {
            return None;
        }
        Some(TokenUsage {
            prompt: prompt.unwrap_or(0),
            completion: completion.unwrap_or(0),
            cached: cached.unwrap_or(0),
            reasoning: reasoning.unwrap_or(0),
        })
    }
}

impl Price {
    /// A price that is 0 for every class (local models).
    pub const FREE: Price = Price {
        input: 0.0,
        cached_input: None,
        output: 0.0,
        reasoning: None,
    };

    /// The dollars `usage` costs: uncached prompt tokens at `input`, cached ones at
    /// `cached_input`, completion tokens other than reasoning at `output`, reasoning tokens at
    /// `reasoning`. Counts of a class larger than their total (a cached count above the prompt
    /// count) are capped at the total.
    ///
    /// ```
    /// use prompt_metrics::{Price, TokenUsage};
    ///
    /// let price = Price { input: 2.5, cached_input: Some(1.25), output: 10.0, reasoning: Some(10.0) };
    /// // 1,000 prompt tokens, 400 of them cached; 500 completion tokens, 100 of them reasoning.
    /// let usage = TokenUsage { prompt: 1_000, completion: 500, cached: 400, reasoning: 100 };
    /// let want = (600.0 * 2.5 + 400.0 * 1.25 + 400.0 * 10.0 + 100.0 * 10.0) / 1e6;
    /// assert!((price.cost(&usage) - want).abs() < 1e-12);
    /// ```
    pub fn cost(&self, usage: &TokenUsage) -> f64 {
        let cached = usage.cached.min(usage.prompt);
        let reasoning = usage.reasoning.min(usage.completion);
        let uncached = usage.prompt - cached;
        let plain_out = usage.completion - reasoning;
        (uncached as f64 * self.input
            + cached as f64 * self.cached_input.unwrap_or(self.input)
            + plain_out as f64 * self.output
            + reasoning as f64 * self.reasoning.unwrap_or(self.output))
            / PER_MILLION
    }

    /// The most `prompt_tokens` prompt tokens and `max_completion` completion tokens can cost:
    /// no prompt token cached, every completion token at the dearer of `output` and
    /// `reasoning`. What a budget checks before a call.
    pub fn worst_case(&self, prompt_tokens: u64, max_completion: u64) -> f64 {
        let out = self.output.max(self.reasoning.unwrap_or(self.output));
        (prompt_tokens as f64 * self.input.max(self.cached_input.unwrap_or(self.input))
            + max_completion as f64 * out)
            / PER_MILLION
    }

    fn check(&self, origin: &str, key: &str) -> Result<(), MetricsError> {
        let fields = [
            ("input", Some(self.input)),
            ("cached_input", self.cached_input),
            ("output", Some(self.output)),
            ("reasoning", self.reasoning),
        ];
        for (field, value) in fields {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(MetricsError::Prices {
                    origin: origin.to_owned(),
                    message: format!(
                        "prices.\"{key}\".{field} is {v}; a price is a finite number of USD per million tokens, 0 or more"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The estimate of the tokens in a text before a call, when no tokenizer is at hand: one token
/// per four characters, rounded up (the rule the offline echo provider reports, too).
///
/// ```
/// assert_eq!(prompt_metrics::estimate_tokens("abcdefghi"), 3);
/// ```
pub fn estimate_tokens(text: &str) -> u64 {
    text.chars().count().div_ceil(4) as u64
}

/// A price table: model names or globs to [`Price`]s, first match in order wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    entries: Vec<(String, Price)>,
    date: Option<String>,
}

/// The shape of a price file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    #[serde(default)]
    prices_date: Option<String>,
    #[serde(default)]
    prices: Ordered,
}

/// The `[prices]` table with its keys in file order.
#[derive(Default)]
struct Ordered(Vec<(String, Price)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of model names or globs to prices")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some((key, price)) = map.next_entry::<String, Price>()? {
                    out.push((key, price));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl PriceTable {
    /// The shipped table alone ([`SHIPPED_PRICES`]).
    pub fn shipped() -> PriceTable {
        // The shipped file is part of the crate and checked by its tests.
        PriceTable::from_toml(SHIPPED_PRICES, "the shipped price table").unwrap_or_default()
    }

    /// Reads a price file's text; `origin` names it in errors (a path).
    pub fn from_toml(text: &str, origin: &str) -> Result<PriceTable, MetricsError> {
        let file: PriceFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            MetricsError::Prices {
                origin: origin.to_owned(),
                message: format!("line {line}: {}", e.message().trim()),
            }
        })?;
        for (key, price) in &file.prices.0 {
            price.check(origin, key)?;
        }
        Ok(PriceTable {
            entries: file.prices.0,
            date: file.prices_date,
        })
    }

    /// The table a program uses: the user's file at `user` (when given) read first, then the
    /// shipped table, so the user's keys win and the shipped ones fill in the rest.
    pub fn load(user: Option<&Path>) -> Result<PriceTable, MetricsError> {
        let mut table = match user {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| MetricsError::io("cannot read price file", path, e))?;
                PriceTable::from_toml(&text, &path.display().to_string())?
            }
            None => PriceTable::default(),
        };
        let shipped = PriceTable::shipped();
        table.entries.extend(shipped.entries);
        if table.date.is_none() {
            table.date = shipped.date;
        }
        Ok(table)
    }

    /// The `prices_date` of the table (of the user's file when it has one, else the shipped
    /// table's).
    pub fn date(&self) -> Option<&str> {
        self.date.as_deref()
    }

    /// The keys and prices in the order they are matched.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Price)> {
        self.entries.iter().map(|(k, p)| (k.as_str(), p))
    }

    /// The price of `model`: the first key, in order, that equals it or matches it as a glob.
    pub fn price(&self, model: &str) -> Option<&Price> {
        self.entries
            .iter()
            .find(|(key, _)| glob_match(key, model))
            .map(|(_, p)| p)
    }

    /// What `usage` on `model` cost, or `None` when the model has no price.
    pub fn cost(&self, usage: &TokenUsage, model: &str) -> Option<f64> {
        self.price(model).map(|p| p.cost(usage))
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (none included)
/// and `?` exactly one; every other character matches itself.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names() {
        let cases = [
            ("gpt-4o*", "gpt-4o", true),
            ("gpt-4o*", "gpt-4o-2024-08-06", true),
            ("gpt-4o*", "gpt-4", false),
            ("*:30b", "qwen3:30b", true),
            ("qwen?:*", "qwen3:8b", true),
            ("qwen?:*", "qwen:8b", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*", "", true),
            ("", "", true),
        ];
        for (p, n, want) in cases {
            assert_eq!(glob_match(p, n), want, "{p} vs {n}");
        }
    }

    #[test]
    fn cached_and_reasoning_tokens_are_priced_once_in_their_own_class() {
        let table = PriceTable::from_toml(
            r#"
[prices."gpt-4o*"]
input = 2.50
cached_input = 1.25
output = 10.00
reasoning = 20.00
"#,
            "test.toml",
        )
        .expect("valid");
        let usage = TokenUsage {
            prompt: 1_000,
            completion: 500,
            cached: 400,
            reasoning: 100,
        };
        let cost = table.cost(&usage, "gpt-4o-mini").expect("priced");
        let want = (600.0 * 2.50 + 400.0 * 1.25 + 400.0 * 10.00 + 100.0 * 20.00) / 1e6;
        assert!((cost - want).abs() < 1e-15, "{cost} vs {want}");
        assert_eq!(table.cost(&usage, "qwen3:30b"), None);
    }

    #[test]
    fn defaults_fall_back_to_input_and_output() {
        let price = Price {
            input: 1.0,
            cached_input: None,
            output: 3.0,
            reasoning: None,
        };
        let usage = TokenUsage {
            prompt: 1_000_000,
            completion: 1_000_000,
            cached: 500_000,
            reasoning: 500_000,
        };
        assert!((price.cost(&usage) - 4.0).abs() < 1e-12);
        // A cached count above the prompt count is capped.
        let odd = TokenUsage {
            prompt: 10,
            completion: 0,
            cached: 50,
            reasoning: 7,
        };
        assert!((price.cost(&odd) - 10.0 / 1e6).abs() < 1e-18);
    }

    #[test]
    fn first_key_in_file_order_wins_and_user_file_comes_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let user = dir.path().join("prices.toml");
        std::fs::write(
            &user,
            "[prices.\"gpt-4o-mini*\"]\ninput = 9.0\noutput = 9.0\n[prices.\"z*\"]\ninput = 1.0\noutput = 1.0\n[prices.\"zeta\"]\ninput = 5.0\noutput = 5.0\n",
        )
        .expect("write");
        let table = PriceTable::load(Some(&user)).expect("loads");
        assert_eq!(table.price("gpt-4o-mini").map(|p| p.input), Some(9.0));
        // `z*` comes before `zeta` in the file.
        assert_eq!(table.price("zeta").map(|p| p.input), Some(1.0));
        // The shipped table fills in what the user's does not price.
        assert_eq!(table.price("gpt-4o").map(|p| p.input), Some(2.50));
        assert_eq!(table.date(), PriceTable::shipped().date());
    }

    #[test]
    fn shipped_table_reads_and_is_dated() {
        let table = PriceTable::from_toml(SHIPPED_PRICES, "shipped").expect("shipped table");
        assert!(table.entries().count() > 10);
        assert!(table.date().is_some_and(|d| d.len() == 10));
        // Specific keys come before the globs that would swallow them.
        assert_eq!(table.price("gpt-4o-mini").map(|p| p.input), Some(0.15));
        assert_eq!(table.price("gpt-4o").map(|p| p.input), Some(2.50));
        assert_eq!(table.price("qwen3:30b"), None);
    }

    #[test]
    fn bad_files_are_errors_naming_the_file_key_and_field() {
        let cases = [
            (
                "[prices.\"m\"]\ninput = -1.0\noutput = 1.0\n",
                "prices.\"m\".input is -1",
            ),
            (
                "[prices.\"m\"]\ninput = 1.0\noutput = 1.0\nextra = 2\n",
                "line 4: unknown field `extra`",
            ),
            ("[prices.\"m\"]\ninput = 1.0\n", "output"),
            (
                "[prices.\"m\"]\ninput = \"cheap\"\noutput = 1.0\n",
                "line 2",
            ),
            ("nonsense = 1\n", "nonsense"),
        ];
        for (text, want) in cases {
            let err = PriceTable::from_toml(text, "my-prices.toml")
                .expect_err(text)
                .to_string();
            assert!(err.contains("my-prices.toml"), "{err}");
            assert!(err.contains(want), "{want:?} not in {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
        let missing = PriceTable::load(Some(Path::new("/nonexistent/prices.toml")))
            .expect_err("missing file")
            .to_string();
        assert!(missing.contains("/nonexistent/prices.toml"), "{missing}");
    }
}
