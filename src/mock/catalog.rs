//! The mock's own model catalog (December 2026): one table per provider, and Azure deployments.
//!
//! Every answer that depends on the model (listings, 404s, rejected parameters, thinking tokens)
//! comes from these rows, never from guessing at a model's name, and never from the provider
//! clients' tables (`src/providers`): the mock must stay an independent check of the clients.
//! Facts come from docs/providers.md; what it does not give is marked [unconfirmed]. Change a row
//! here when a provider changes a model.

/// Where a model is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    Active,
    /// Still served; `shutdown` is the announced shutdown date (`YYYY-MM-DD`) when one is known.
    Deprecated {
        shutdown: Option<&'static str>,
    },
    /// Gone: absent from listings, 404 on lookup and on use, exactly like an unknown id.
    Retired,
}

/// What a model does with a `temperature` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Temperature {
    /// Any value is accepted.
    Any,
    /// OpenAI reasoning models: only the default, 1; any other value is 400 `unsupported_value`.
    OnlyDefault,
    /// Anthropic claude-opus-4-7 and later and the 5-series: 400 whenever it is sent.
    Rejected,
}

/// Whether a model thinks before answering, and which control sets how much.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reasoning {
    /// Not a reasoning model; OpenAI rejects `reasoning_effort` on these.
    None,
    /// OpenAI reasoning model: `reasoning_effort` from `accepted` (`default` when not sent);
    /// rejects `max_tokens`.
    Effort { accepted: &'static [&'static str], default: &'static str },
    /// Gemini 3 thinking model: `thinkingConfig.thinkingLevel` from `accepted`; rejects
    /// `thinkingBudget` together with `thinkingLevel`.
    ThinkingLevel { accepted: &'static [&'static str] },
    /// Gemini 2.5 thinking model: only `thinkingConfig.thinkingBudget` (an integer); rejects
    /// `thinkingLevel`.
    ThinkingBudget,
}

/// One model id and what it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Model {
    pub id: &'static str,
    pub lifecycle: Lifecycle,
    pub temperature: Temperature,
    pub reasoning: Reasoning,
}

impl Model {
    /// Whether the model thinks (OpenAI reasoning, Gemini thinking) before it answers.
    pub fn is_reasoning(&self) -> bool {
        self.reasoning != Reasoning::None
    }

    /// Whether the model still answers (listed, found, usable).
    pub fn is_served(&self) -> bool {
        self.lifecycle != Lifecycle::Retired
    }

    /// The announced shutdown date of a deprecated model.
    pub fn shutdown_date(&self) -> Option<&'static str> {
        match self.lifecycle {
            Lifecycle::Deprecated { shutdown } => shutdown,
            _ => None,
        }
    }
}

/// An Azure OpenAI deployment: an arbitrary name for one underlying OpenAI model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deployment {
    pub name: &'static str,
    pub model: &'static str,
}

const fn model(id: &'static str, lifecycle: Lifecycle, temperature: Temperature, reasoning: Reasoning) -> Model {
    Model { id, lifecycle, temperature, reasoning }
}

use Lifecycle::{Active, Deprecated, Retired};

/// OpenAI shutdown of gpt-4o and gpt-4o-mini (third-party mirrors of the deprecations page).
const GPT_4O_SHUTDOWN: &str = "2027-01-14";

/// OpenAI, as served by `/openai/v1` (and underlying the Azure deployments).
pub const OPENAI: &[Model] = &[
    // gpt-5.1's real default effort may be `none` rather than medium [unconfirmed]; medium is the
    // rule this mock was asked for.
    model(
        "gpt-5.1",
        Active,
        Temperature::OnlyDefault,
        Reasoning::Effort { accepted: &["none", "low", "medium", "high"], default: "medium" },
    ),
    // The accepted efforts of gpt-5-mini (minimal included, none excluded) are [unconfirmed].
    model(
        "gpt-5-mini",
        Active,
        Temperature::OnlyDefault,
        Reasoning::Effort { accepted: &["minimal", "low", "medium", "high"], default: "medium" },
    ),
    model(
        "o4-mini",
        Active,
        Temperature::OnlyDefault,
        Reasoning::Effort { accepted: &["low", "medium", "high"], default: "medium" },
    ),
    model("gpt-4.1", Active, Temperature::Any, Reasoning::None),
    model("gpt-4.1-mini", Active, Temperature::Any, Reasoning::None),
    model("gpt-4o", Deprecated { shutdown: Some(GPT_4O_SHUTDOWN) }, Temperature::Any, Reasoning::None),
    model("gpt-4o-mini", Deprecated { shutdown: Some(GPT_4O_SHUTDOWN) }, Temperature::Any, Reasoning::None),
    // What gpt-4.5-preview accepted no longer matters: it answers 404.
    model("gpt-4.5-preview", Retired, Temperature::Any, Reasoning::None),
];

/// Anthropic, as served by `/anthropic`. Listed in this order (the real API lists newest first).
pub const ANTHROPIC: &[Model] = &[
    model("claude-sonnet-4-6", Active, Temperature::Any, Reasoning::None),
    model("claude-haiku-4-5", Active, Temperature::Any, Reasoning::None),
    model("claude-opus-4-8", Active, Temperature::Rejected, Reasoning::None),
    model("claude-sonnet-5", Active, Temperature::Rejected, Reasoning::None),
    // Deprecated without a known shutdown date; that it still accepts temperature is [unconfirmed].
    model("claude-opus-4-1", Deprecated { shutdown: None }, Temperature::Any, Reasoning::None),
    model("claude-sonnet-4-5", Retired, Temperature::Any, Reasoning::None),
    model("claude-sonnet-4-5-20250929", Retired, Temperature::Any, Reasoning::None),
    model("claude-sonnet-4-20250514", Retired, Temperature::Any, Reasoning::None),
];

/// Gemini, as served by `/google/{v1beta|v1}`. That all of them accept `temperature` is [unconfirmed].
pub const GOOGLE: &[Model] = &[
    model("gemini-3.5-flash", Active, Temperature::Any, Reasoning::ThinkingLevel { accepted: &["low", "high"] }),
    model("gemini-3.1-pro-preview", Active, Temperature::Any, Reasoning::ThinkingLevel { accepted: &["low", "high"] }),
    model("gemini-2.5-flash-lite", Active, Temperature::Any, Reasoning::ThinkingBudget),
    model("gemini-2.5-pro", Retired, Temperature::Any, Reasoning::ThinkingBudget),
    model("gemini-2.5-flash", Retired, Temperature::Any, Reasoning::ThinkingBudget),
];

/// Azure OpenAI deployments of the mock resource. Names are arbitrary: "judge" is a gpt-5.1.
pub const AZURE: &[Deployment] = &[
    Deployment { name: "gpt-4o", model: "gpt-4o" },
    Deployment { name: "judge", model: "gpt-5.1" },
    Deployment { name: "gpt-4-1", model: "gpt-4.1" },
];

/// Thinking tokens an OpenAI reasoning model spends at a `reasoning_effort`.
pub fn effort_tokens(effort: &str) -> Option<u64> {
    match effort {
        "none" => Some(0),
        "minimal" => Some(16),
        "low" => Some(64),
        "medium" => Some(512),
        "high" => Some(2048),
        _ => None,
    }
}

/// Thinking tokens a Gemini 3 model spends at a `thinkingLevel` (case-insensitive [unconfirmed]).
pub fn thinking_level_tokens(level: &str) -> Option<u64> {
    match level.to_ascii_lowercase().as_str() {
        "low" => Some(64),
        "high" => Some(2048),
        _ => None,
    }
}

/// Thinking tokens of a Gemini thinking model given no `thinkingConfig`.
pub const GEMINI_DEFAULT_THINKING: u64 = 1024;

/// Thinking tokens spent for a `thinkingBudget`: at most the budget, and at most what the model
/// would spend unbounded. `-1` asks for dynamic thinking [unconfirmed]; other negatives are invalid.
pub fn thinking_budget_tokens(budget: i64) -> Option<u64> {
    match budget {
        -1 => Some(GEMINI_DEFAULT_THINKING),
        n => u64::try_from(n).ok().map(|n| n.min(GEMINI_DEFAULT_THINKING)),
    }
}

/// What a mock serves: one table per provider. [`Catalog::default`] is the full December 2026
/// catalog above; tests may narrow or extend it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Catalog {
    pub openai: Vec<Model>,
    pub anthropic: Vec<Model>,
    pub google: Vec<Model>,
    pub azure: Vec<Deployment>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self { openai: OPENAI.to_vec(), anthropic: ANTHROPIC.to_vec(), google: GOOGLE.to_vec(), azure: AZURE.to_vec() }
    }
}

/// The row of a model that still answers; None for unknown and retired ids alike.
fn served<'a>(table: &'a [Model], id: &str) -> Option<&'a Model> {
    table.iter().find(|m| m.id == id && m.is_served())
}

impl Catalog {
    pub fn openai_model(&self, id: &str) -> Option<&Model> {
        served(&self.openai, id)
    }

    pub fn anthropic_model(&self, id: &str) -> Option<&Model> {
        served(&self.anthropic, id)
    }

    pub fn google_model(&self, id: &str) -> Option<&Model> {
        served(&self.google, id)
    }

    /// The OpenAI model behind an Azure deployment; None when there is no such deployment (or,
    /// [unconfirmed], when its model is retired: treated as a deployment that no longer answers).
    pub fn azure_model(&self, deployment: &str) -> Option<&Model> {
        let deployment = self.azure.iter().find(|d| d.name == deployment)?;
        self.openai_model(deployment.model)
    }

    /// Models that answer, in table order, for listings.
    pub fn listed(table: &[Model]) -> impl Iterator<Item = &Model> {
        table.iter().filter(|m| m.is_served())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_and_unknown_models_are_not_served() {
        let c = Catalog::default();
        assert_eq!(c.openai_model("gpt-5.1").map(|m| m.id), Some("gpt-5.1"));
        assert!(c.openai_model("gpt-4.5-preview").is_none());
        assert!(c.openai_model("gpt-x").is_none());
        assert!(c.anthropic_model("claude-sonnet-4-20250514").is_none());
        assert!(c.anthropic_model("claude-sonnet-4-5").is_none());
        assert!(c.anthropic_model("claude-sonnet-4-5-20250929").is_none());
        assert!(c.anthropic_model("claude-opus-4-1").is_some());
        assert!(c.google_model("gemini-2.5-pro").is_none());
        assert!(c.google_model("gemini-2.5-flash").is_none());
        assert!(c.google_model("gemini-pro").is_none());
        assert!(c.google_model("gemini-3.5-flash").is_some());
        let listed: Vec<&str> = Catalog::listed(&c.openai).map(|m| m.id).collect();
        assert_eq!(listed, ["gpt-5.1", "gpt-5-mini", "o4-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4o", "gpt-4o-mini"]);
        let listed: Vec<&str> = Catalog::listed(&c.google).map(|m| m.id).collect();
        assert_eq!(listed, ["gemini-3.5-flash", "gemini-3.1-pro-preview", "gemini-2.5-flash-lite"]);
    }

    #[test]
    fn capabilities_come_from_the_table() {
        let c = Catalog::default();
        let temperature = |m: Option<&Model>| m.map(|m| m.temperature);
        assert_eq!(temperature(c.openai_model("gpt-4.1")), Some(Temperature::Any));
        assert_eq!(temperature(c.openai_model("o4-mini")), Some(Temperature::OnlyDefault));
        assert_eq!(temperature(c.openai_model("gpt-5-mini")), Some(Temperature::OnlyDefault));
        assert_eq!(temperature(c.anthropic_model("claude-sonnet-4-6")), Some(Temperature::Any));
        assert_eq!(temperature(c.anthropic_model("claude-haiku-4-5")), Some(Temperature::Any));
        assert_eq!(temperature(c.anthropic_model("claude-opus-4-8")), Some(Temperature::Rejected));
        assert_eq!(temperature(c.anthropic_model("claude-sonnet-5")), Some(Temperature::Rejected));
        assert_eq!(c.openai_model("gpt-4o").and_then(Model::shutdown_date), Some("2027-01-14"));
        assert_eq!(c.openai_model("gpt-4o-mini").and_then(Model::shutdown_date), Some("2027-01-14"));
        assert_eq!(c.openai_model("gpt-4.1").and_then(Model::shutdown_date), None);
        assert!(c.google_model("gemini-2.5-flash-lite").is_some_and(Model::is_reasoning));
        assert!(!c.openai_model("gpt-4o").is_some_and(Model::is_reasoning));
    }

    #[test]
    fn azure_deployments_resolve_to_their_underlying_model() {
        let c = Catalog::default();
        assert_eq!(c.azure_model("gpt-4o").map(|m| m.id), Some("gpt-4o"));
        assert_eq!(c.azure_model("judge").map(|m| m.id), Some("gpt-5.1"));
        assert_eq!(c.azure_model("judge").map(|m| m.temperature), Some(Temperature::OnlyDefault));
        assert_eq!(c.azure_model("gpt-4-1").map(|m| m.id), Some("gpt-4.1"));
        assert!(c.azure_model("gpt-4.1").is_none(), "a model id is not a deployment name");
        assert!(c.azure_model("nope").is_none());
        assert!(AZURE.iter().all(|d| c.openai_model(d.model).is_some()), "every deployment resolves");
    }

    #[test]
    fn table_values_are_well_formed() {
        for m in OPENAI.iter().chain(ANTHROPIC).chain(GOOGLE) {
            if let Some(date) = m.shutdown_date() {
                assert!(date.parse::<jiff::civil::Date>().is_ok(), "{}: {date}", m.id);
            }
            match m.reasoning {
                Reasoning::Effort { accepted, default } => {
                    assert!(accepted.contains(&default), "{}", m.id);
                    assert!(accepted.iter().all(|e| effort_tokens(e).is_some()), "{}", m.id);
                    assert_eq!(m.temperature, Temperature::OnlyDefault, "{}", m.id);
                }
                Reasoning::ThinkingLevel { accepted } => {
                    assert!(accepted.iter().all(|l| thinking_level_tokens(l).is_some()), "{}", m.id);
                }
                Reasoning::None | Reasoning::ThinkingBudget => {}
            }
        }
        let ids = |t: &[Model]| t.iter().map(|m| m.id).collect::<std::collections::HashSet<_>>().len();
        assert_eq!(ids(OPENAI), OPENAI.len());
        assert_eq!(ids(ANTHROPIC), ANTHROPIC.len());
        assert_eq!(ids(GOOGLE), GOOGLE.len());
    }

    #[test]
    fn thinking_token_tables() {
        let efforts: Vec<Option<u64>> =
            ["none", "minimal", "low", "medium", "high", "xhigh"].iter().map(|e| effort_tokens(e)).collect();
        assert_eq!(efforts, [Some(0), Some(16), Some(64), Some(512), Some(2048), None]);
        assert_eq!(thinking_level_tokens("low"), Some(64));
        assert_eq!(thinking_level_tokens("HIGH"), Some(2048));
        assert_eq!(thinking_level_tokens("medium"), None);
        assert_eq!(thinking_budget_tokens(0), Some(0));
        assert_eq!(thinking_budget_tokens(100), Some(100));
        assert_eq!(thinking_budget_tokens(50_000), Some(1024));
        assert_eq!(thinking_budget_tokens(-1), Some(1024));
        assert_eq!(thinking_budget_tokens(-2), None);
    }
}
