//! What calls cost and the budgets that stop them: the price table, the limits of `[budget]`,
//! the check before a call and the cost written into each record.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use prompt_metrics::{MetricsSink, PriceTable, PromptMetrics, Spend, TokenUsage, estimate_tokens};
use serde::{Deserialize, Serialize};

use crate::error::AgentError;
use crate::request::ChatRequest;

/// Spending limits in USD per UTC day: `[budget]` in `prompt.toml`.
///
/// ```toml
/// [budget]
/// daily_usd = 5.0
/// [budget.agents]
/// writer = 2.0
/// [budget.tags]
/// eval = 1.0
/// ```
///
/// Spend is counted from the metrics files (the records' `cost_usd` since 00:00 UTC), so every
/// process writing to one metrics directory shares it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    /// All calls of the day together.
    pub daily_usd: Option<f64>,
    /// Per agent (the records' `agent`).
    pub agents: BTreeMap<String, f64>,
    /// Per tag: the calls carrying the tag.
    pub tags: BTreeMap<String, f64>,
}

impl Budget {
    /// Whether any limit is set.
    pub fn is_empty(&self) -> bool {
        self.daily_usd.is_none() && self.agents.is_empty() && self.tags.is_empty()
    }

    /// Every limit with its name as written in `prompt.toml` (`budget.daily_usd`,
    /// `budget.agents.writer`, `budget.tags.eval`), the one spelling of limit names in errors,
    /// checks and `prompt metrics budget`.
    pub fn limits(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        if let Some(v) = self.daily_usd {
            out.push(("budget.daily_usd".to_owned(), v));
        }
        for (agent, v) in &self.agents {
            out.push((format!("budget.agents.{agent}"), *v));
        }
        for (tag, v) in &self.tags {
            out.push((format!("budget.tags.{tag}"), *v));
        }
        out
    }

    /// Every limit with what `spend` spent against it, in the order of [`limits`](Self::limits).
    pub fn against(&self, spend: &Spend) -> Vec<LimitSpend> {
        self.limits()
            .into_iter()
            .map(|(limit, limit_usd)| {
                let spent_usd = if let Some(agent) = limit.strip_prefix("budget.agents.") {
                    spend.agents.get(agent).copied().unwrap_or(0.0)
                } else if let Some(tag) = limit.strip_prefix("budget.tags.") {
                    spend.tags.get(tag).copied().unwrap_or(0.0)
                } else {
                    spend.total_usd
                };
                LimitSpend {
                    limit,
                    limit_usd,
                    spent_usd,
                }
            })
            .collect()
    }

    /// Checks every limit is a finite number of dollars, 0 or more; the error names the field.
    pub fn check(&self) -> Result<(), AgentError> {
        for (field, v) in self.limits() {
            check_usd(&field, v)?;
        }
        Ok(())
    }
}

/// Tags of one call, from a comma-separated list (the gateway's `X-Prompt-Tags` header):
/// each trimmed, empty ones dropped, each checked by [`check_tag`].
///
/// ```
/// assert_eq!(prompt_agent::parse_tags(" eval, nightly,,").unwrap(), ["eval", "nightly"]);
/// assert!(prompt_agent::parse_tags("ok, a\u{7}b").is_err());
/// ```
pub fn parse_tags(list: &str) -> Result<Vec<String>, String> {
    let mut tags = Vec::new();
    for tag in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        check_tag(tag)?;
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    Ok(tags)
}

/// The rule every tag follows, wherever it comes from (`--tag`, a batch job's `tags`,
/// [`GenerateOptions::tags`](crate::GenerateOptions::tags), `X-Prompt-Tags`): 1 to 64
/// characters, no comma (the header's separator), no control character, not only spaces.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let n = tag.chars().count();
    if tag.trim().is_empty() || n > 64 || tag.contains(',') || tag.chars().any(char::is_control) {
        return Err(format!(
            "bad tag {tag:?}: a tag has 1 to 64 characters, no comma and no control character"
        ));
    }
    Ok(())
}

/// One limit of a [`Budget`] and what was spent against it ([`Budget::against`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitSpend {
    /// The limit as named in `prompt.toml`: `budget.daily_usd`, `budget.agents.NAME`,
    /// `budget.tags.TAG`.
    pub limit: String,
    /// The limit in USD.
    pub limit_usd: f64,
    /// Spent against it in USD.
    pub spent_usd: f64,
}

impl LimitSpend {
    /// Whether the limit counts a call of `agent` with `tags`.
    fn applies(&self, agent: &str, tags: &[String]) -> bool {
        if let Some(a) = self.limit.strip_prefix("budget.agents.") {
            a == agent
        } else if let Some(t) = self.limit.strip_prefix("budget.tags.") {
            tags.iter().any(|x| x == t)
        } else {
            true
        }
    }
}

/// The start (00:00 UTC) of the day budgets count spend in.
pub fn budget_day_start(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |m| m.and_utc())
}

/// Checks a limit in USD, naming its field in the error.
pub(crate) fn check_usd(field: &str, v: f64) -> Result<(), AgentError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(AgentError::Config {
            field: field.to_owned(),
            message: format!("{v} is not an amount of USD (a number >= 0)"),
        })
    }
}

/// The shipped price table, parsed once.
fn shipped() -> &'static PriceTable {
    static SHIPPED: OnceLock<PriceTable> = OnceLock::new();
    SHIPPED.get_or_init(PriceTable::shipped)
}

/// Prices, limits and this system's own spend, shared by every agent of a
/// [`PromptSystem`](crate::PromptSystem).
#[derive(Debug)]
pub(crate) struct CostBook {
    prices: PriceTable,
    budget: Budget,
    /// `--budget-usd`: the most this system (one command) may spend, in USD.
    own_limit: Option<f64>,
    /// What this system's calls cost so far, and the worst cases of its calls in flight.
    own: Mutex<Own>,
}

#[derive(Debug, Default)]
struct Own {
    spent: f64,
    reserved: f64,
}

impl Default for CostBook {
    fn default() -> Self {
        CostBook::new(shipped().clone(), Budget::default(), None)
    }
}

/// A call's worst case, held against the limits while the call is in flight; released on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    book: Option<Arc<CostBook>>,
    amount: f64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(book) = &self.book {
            let mut own = book.own.lock();
            own.reserved = (own.reserved - self.amount).max(0.0);
        }
    }
}

impl CostBook {
    pub(crate) fn new(prices: PriceTable, budget: Budget, own_limit: Option<f64>) -> Self {
        CostBook {
            prices,
            budget,
            own_limit,
            own: Mutex::new(Own::default()),
        }
    }

    /// The cost of `usage` on `model`: its price, else 0 on a local provider, else unknown.
    pub(crate) fn cost(&self, usage: Option<TokenUsage>, model: &str, local: bool) -> Option<f64> {
        match self.prices.price(model) {
            Some(price) => usage.map(|u| price.cost(&u)),
            None if local => Some(0.0),
            None => None,
        }
    }

    /// Fills the record's `cost_usd` unless already set: 0 for a cache hit (`saved_usd` is
    /// set by the hit's caller), else its usage at its model's price.
    pub(crate) fn price_record(&self, record: &mut PromptMetrics, local: bool) {
        if record.cost_usd.is_some() {
            return;
        }
        record.cost_usd = if record.cache_hit {
            Some(0.0)
        } else {
            self.cost(record.usage(), &record.model, local)
        };
    }

    /// Counts a written record's cost against this system's own spend (`--budget-usd`).
    pub(crate) fn count(&self, record: &PromptMetrics) {
        if let Some(c) = record.cost_usd {
            self.own.lock().spent += c;
        }
    }

    /// Whether any limit applies to this system's calls.
    fn limited(&self) -> bool {
        self.own_limit.is_some() || !self.budget.is_empty()
    }

    /// Before a provider call: its worst case (prompt tokens estimated from the messages,
    /// plus `max_tokens`) against every limit that applies to it — the day's total, the
    /// agent's, each of the call's tags', this system's own — with what is already spent
    /// (from the metrics files) and what this system's calls in flight may still spend. A call
    /// that would break a limit is refused with an error naming the limit, the spend and the
    /// estimate; otherwise its worst case is held until the returned reservation drops.
    pub(crate) fn admit(
        self: &Arc<Self>,
        metrics: Option<&Arc<dyn MetricsSink>>,
        agent: &str,
        tags: &[String],
        request: &ChatRequest,
    ) -> Result<Reservation, AgentError> {
        if !self.limited() {
            return Ok(Reservation {
                book: None,
                amount: 0.0,
            });
        }
        let estimate = self.worst_case(request);
        let applies = |l: &LimitSpend| l.applies(agent, tags);
        let any_daily = self.budget.against(&Spend::default()).iter().any(applies);
        let spend = match metrics {
            Some(sink) if any_daily => {
                let spend = sink.spend_since(budget_day_start(Utc::now()))?;
                if spend.is_none() {
                    tracing::warn!(
                        "the metrics sink cannot tell today's spend; [budget] limits are not checked"
                    );
                }
                spend
            }
            _ => None,
        };
        let mut own = self.own.lock();
        let mut checks: Vec<(String, f64, f64)> = Vec::new();
        if let Some(spend) = &spend {
            for l in self.budget.against(spend).into_iter().filter(applies) {
                checks.push((l.limit, l.limit_usd, l.spent_usd));
            }
        }
        if let Some(limit) = self.own_limit {
            checks.push(("--budget-usd".to_owned(), limit, own.spent));
        }
        for (name, limit, spent) in checks {
            let committed = spent + own.reserved;
            // Once a limit is reached every call is refused, even one estimated at 0.
            if committed + estimate > limit || committed >= limit {
                return Err(AgentError::Budget {
                    limit: name,
                    limit_usd: limit,
                    spent_usd: committed,
                    estimate_usd: estimate,
                });
            }
        }
        own.reserved += estimate;
        Ok(Reservation {
            book: Some(self.clone()),
            amount: estimate,
        })
    }

    /// The most a request can cost: its messages' estimated tokens, all uncached, plus its
    /// `max_tokens` (0 when unset), at the model's price; 0 for an unpriced model.
    fn worst_case(&self, request: &ChatRequest) -> f64 {
        let Some(price) = self.prices.price(request.model()) else {
            // Unpriced: a local model costs 0; a hosted one cannot be estimated.
            return 0.0;
        };
        let prompt: u64 = request
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.content))
            .sum();
        let completion = request.options.max_tokens.unwrap_or(0);
        price.worst_case(prompt, completion)
    }
}
