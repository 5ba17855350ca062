//! What the clients believe about models, in one dated table: the default judge models we ship,
//! when models die, and which optional parameters each takes. The mock provider keeps its own
//! catalog (src/mock/catalog.rs) and never reads this one, so the two cannot agree by
//! construction. Sources: the providers' model and deprecation pages and third-party mirrors of
//! them, as listed per row; docs/providers.md shows the same table to users.

use std::fmt;

use jiff::civil::Date;

use crate::crd::Provider;

/// When the rows below were last checked against their sources.
pub const CHECKED: &str = "2026-12-02";

/// The default judge model per provider (Azure OpenAI has none: it always uses the deployment).
/// Each must be a [`Stage::Current`] row of [`LIFECYCLE`] (a unit test holds them to it).
pub const DEFAULT_MODELS: [(Provider, &str); 3] =
    [(Provider::OpenAi, "gpt-5.1"), (Provider::Anthropic, "claude-sonnet-4-6"), (Provider::Google, "gemini-3.5-flash")];

/// Where a model is in its life, per the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Served, with no shutdown announced when the table was checked.
    Current,
    /// Shut down on this date (requests answer 404 or are redirected from then on).
    ShutsDown(&'static str),
}

/// One row: `model` is an exact id, or a prefix when it ends in `*`.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub provider: Provider,
    pub model: &'static str,
    pub stage: Stage,
    pub replacement: Option<&'static str>,
    pub source: &'static str,
}

const PROVIDERS_MD: &str = "the providers' deprecation pages, as gathered in docs/providers.md";
const GEMINI_PAGE: &str = "ai.google.dev/gemini-api/docs/deprecations";

/// The lifecycle table. Dates come partly from third-party mirrors of the providers' pages: they
/// live here alone so that a correction is a one-line change.
pub const LIFECYCLE: &[Row] = &[
    row(Provider::OpenAi, "gpt-5.1", Stage::Current, None, "platform.openai.com/docs/models"),
    row(Provider::OpenAi, "gpt-4o", Stage::ShutsDown("2027-01-14"), Some("gpt-5.1"), PROVIDERS_MD),
    row(Provider::OpenAi, "gpt-4o-2024-*", Stage::ShutsDown("2027-01-14"), Some("gpt-5.1"), PROVIDERS_MD),
    row(
        Provider::OpenAi,
        "gpt-4.5-preview*",
        Stage::ShutsDown("2025-07-14"),
        Some("gpt-5.1"),
        "platform.openai.com/docs/deprecations",
    ),
    row(Provider::Anthropic, "claude-sonnet-4-6", Stage::Current, None, PROVIDERS_MD),
    row(
        Provider::Anthropic,
        "claude-sonnet-4-5*",
        Stage::ShutsDown("2026-11-30"),
        Some("claude-sonnet-4-6"),
        PROVIDERS_MD,
    ),
    row(
        Provider::Anthropic,
        "claude-sonnet-4-20250514",
        Stage::ShutsDown("2026-06-15"),
        Some("claude-sonnet-4-6"),
        PROVIDERS_MD,
    ),
    row(
        Provider::Anthropic,
        "claude-sonnet-4-0",
        Stage::ShutsDown("2026-06-15"),
        Some("claude-sonnet-4-6"),
        PROVIDERS_MD,
    ),
    row(Provider::Google, "gemini-3.5-flash", Stage::Current, None, GEMINI_PAGE),
    row(Provider::Google, "gemini-2.5-pro", Stage::ShutsDown("2026-06-17"), Some("gemini-3.5-flash"), GEMINI_PAGE),
    row(Provider::Google, "gemini-2.5-flash", Stage::ShutsDown("2026-06-17"), Some("gemini-3.5-flash"), GEMINI_PAGE),
];

const fn row(
    provider: Provider,
    model: &'static str,
    stage: Stage,
    replacement: Option<&'static str>,
    source: &'static str,
) -> Row {
    Row { provider, model, stage, replacement, source }
}

impl Row {
    fn matches(&self, provider: Provider, model: &str) -> bool {
        let model = model.strip_prefix("models/").unwrap_or(model);
        self.provider == provider
            && match self.model.strip_suffix('*') {
                Some(prefix) => model.starts_with(prefix),
                None => model == self.model,
            }
    }
}

/// The table's row for a model, if it has one.
pub fn lookup(provider: Provider, model: &str) -> Option<&'static Row> {
    LIFECYCLE.iter().find(|r| r.matches(provider, model))
}

/// What the provider itself said about a model's life when the key was checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    /// OpenAI `shutdown_date`, Anthropic lifecycle dates.
    pub shutdown: Option<Date>,
    /// `deprecated` or `retired` from the provider (Anthropic `lifecycle`).
    pub status: Option<String>,
}

/// A model that is dying or dead, said in words a person can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub model: String,
    pub retired: bool,
    pub shutdown: Option<Date>,
    pub replacement: Option<String>,
    /// Where the facts come from: the provider's answer or the dated table.
    pub source: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.retired, self.shutdown) {
            (true, Some(date)) => write!(f, "model {} was shut down on {date}", self.model)?,
            (true, None) => write!(f, "model {} is retired", self.model)?,
            (false, Some(date)) => write!(f, "model {} is deprecated and shuts down on {date}", self.model)?,
            (false, None) => write!(f, "model {} is deprecated", self.model)?,
        }
        if let Some(replacement) = &self.replacement {
            write!(f, "; the provider recommends {replacement}")?;
        }
        write!(f, " (source: {})", self.source)
    }
}

/// Assesses a model on `today`: the provider's own word first, the table next. None for a model
/// with no shutdown known.
pub fn notice(provider: Provider, model: &str, today: Date, reported: Option<&Reported>) -> Option<Notice> {
    let row = lookup(provider, model);
    let table_date = match row.map(|r| r.stage) {
        Some(Stage::ShutsDown(date)) => date.parse::<Date>().ok(),
        _ => None,
    };
    let replacement = row.and_then(|r| r.replacement).map(str::to_string);
    let said = reported.filter(|r| r.shutdown.is_some() || r.status.as_deref().is_some_and(is_dying));
    let (shutdown, said_retired, source) = match said {
        Some(r) => (
            r.shutdown.or(table_date),
            r.status.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("retired")),
            "the provider's model list".to_string(),
        ),
        None => (Some(table_date?), false, format!("lifecycle table checked {CHECKED}: {}", row?.source)),
    };
    let retired = said_retired || shutdown.is_some_and(|d| d <= today);
    Some(Notice { model: model.to_string(), retired, shutdown, replacement, source })
}

fn is_dying(status: &str) -> bool {
    status.eq_ignore_ascii_case("deprecated") || status.eq_ignore_ascii_case("retired")
}

/// A date as providers write it: `2027-01-14`, or a timestamp whose date is taken.
pub fn parse_date(text: &str) -> Option<Date> {
    let text = text.trim();
    text.parse::<Date>()
        .ok()
        .or_else(|| text.parse::<jiff::Timestamp>().ok().map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date()))
}

/// Today's date in UTC, for [`notice`].
pub fn today() -> Date {
    jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date()
}

/// How a model is asked to keep its reasoning short, so that thinking tokens do not eat the
/// whole output limit before the verdict is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reasoning {
    /// Not a reasoning model, or one we know nothing about: send no control.
    None,
    /// OpenAI o-series and gpt-5.x: `reasoning_effort`.
    Effort(&'static str),
    /// Gemini 3: `thinkingConfig.thinkingLevel`.
    ThinkingLevel(&'static str),
    /// Gemini 2.5: `thinkingConfig.thinkingBudget` (tokens).
    ThinkingBudget(u32),
}

/// Tokens added to the output limit of a reasoning model: a low effort still thinks a little.
pub const REASONING_ALLOWANCE: u32 = 2048;

/// The model id without a `models/` or `org/` prefix, lower case.
fn bare(model: &str) -> String {
    let model = model.to_ascii_lowercase();
    model.rsplit('/').next().unwrap_or(&model).to_string()
}

/// The reasoning control to send. Azure deployments are named by their owners, so nothing is
/// guessed from them.
pub fn reasoning(provider: Provider, model: &str) -> Reasoning {
    let model = bare(model);
    match provider {
        Provider::OpenAi if openai_reasoning(&model) => Reasoning::Effort("low"),
        Provider::Google if model.starts_with("gemini-3") => Reasoning::ThinkingLevel("low"),
        Provider::Google if model.starts_with("gemini-2.5") => Reasoning::ThinkingBudget(512),
        _ => Reasoning::None,
    }
}

/// o1, o3, o4-mini..., gpt-5.x and later.
fn openai_reasoning(model: &str) -> bool {
    let mut chars = model.chars();
    let o_series = chars.next() == Some('o') && chars.next().is_some_and(|c| c.is_ascii_digit());
    let gpt_major = model
        .strip_prefix("gpt-")
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|major| major.parse::<u32>().ok()));
    o_series || gpt_major.is_some_and(|major| major >= 5)
}

/// Whether to send `temperature: 0`. `None` means "unknown": send it and drop it if refused
/// (Azure deployments). OpenAI takes it only on known non-reasoning models; Anthropic refuses it
/// from claude-opus-4-7 and on the 5-series.
pub fn temperature(provider: Provider, model: &str) -> Option<bool> {
    let model = bare(model);
    match provider {
        Provider::OpenAi => Some(["gpt-4o", "gpt-4.1", "gpt-4-", "gpt-3.5"].iter().any(|p| model.starts_with(p))),
        Provider::Anthropic => Some(anthropic_takes_temperature(&model)),
        Provider::Google => Some(true),
        Provider::AzureOpenAi => None,
    }
}

/// `claude-<family>-<major>[-<minor>][-<date>]`: the 5-series and opus 4.7+ refuse temperature.
/// Older ids (`claude-3-5-sonnet-...`) take it.
fn anthropic_takes_temperature(model: &str) -> bool {
    let parts: Vec<&str> = model.split('-').collect();
    let (family, major, minor) = match parts.as_slice() {
        ["claude", family, major, rest @ ..] if family.chars().all(|c| c.is_ascii_alphabetic()) => {
            let minor = rest.first().filter(|m| m.len() <= 2).and_then(|m| m.parse::<u32>().ok());
            (*family, major.parse::<u32>().ok(), minor.unwrap_or(0))
        }
        _ => return true,
    };
    match major {
        Some(major) if major >= 5 => false,
        Some(4) if family == "opus" => minor < 7,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> Date {
        s.parse().expect("date")
    }

    #[test]
    fn every_row_parses_and_defaults_are_current_for_the_next_quarter() {
        let checked = date(CHECKED);
        for r in LIFECYCLE {
            if let Stage::ShutsDown(d) = r.stage {
                d.parse::<Date>().unwrap_or_else(|e| panic!("{}: {d}: {e}", r.model));
            }
        }
        let next_quarter = checked.checked_add(jiff::Span::new().days(90)).expect("date");
        for (provider, model) in DEFAULT_MODELS {
            let row = lookup(provider, model).unwrap_or_else(|| panic!("default {model} has no lifecycle row"));
            assert_eq!(row.stage, Stage::Current, "default {model} must be current");
            assert_eq!(notice(provider, model, next_quarter, None), None, "{model}");
            assert!(temperature(provider, model).is_some());
        }
    }

    #[test]
    fn deprecated_and_retired_models_say_when_and_what_instead() {
        let n = notice(Provider::OpenAi, "gpt-4o", date("2026-12-02"), None).expect("gpt-4o is dying");
        assert!(!n.retired);
        assert_eq!(n.shutdown, Some(date("2027-01-14")));
        assert_eq!(n.replacement.as_deref(), Some("gpt-5.1"));
        assert!(n.to_string().starts_with("model gpt-4o is deprecated and shuts down on 2027-01-14"), "{n}");
        let n = notice(Provider::OpenAi, "gpt-4o", date("2027-01-14"), None).expect("gone");
        assert!(n.retired);
        let n = notice(Provider::Anthropic, "claude-sonnet-4-5-20250929", date("2026-12-02"), None).expect("gone");
        assert!(n.retired && n.to_string().contains("2026-11-30"), "{n}");
        assert!(notice(Provider::Google, "models/gemini-2.5-pro", date("2026-12-02"), None).is_some_and(|n| n.retired));
        assert_eq!(notice(Provider::OpenAi, "gpt-4o-mini", date("2026-12-02"), None), None);
        assert_eq!(notice(Provider::AzureOpenAi, "gpt-4o", date("2026-12-02"), None), None);
    }

    #[test]
    fn the_provider_word_wins_over_the_table() {
        let reported = Reported { shutdown: Some(date("2027-03-01")), status: None };
        let n = notice(Provider::OpenAi, "gpt-4.1", date("2026-12-02"), Some(&reported)).expect("reported");
        assert_eq!(n.shutdown, Some(date("2027-03-01")));
        assert_eq!(n.source, "the provider's model list");
        let reported = Reported { shutdown: None, status: Some("deprecated".into()) };
        let n = notice(Provider::Anthropic, "claude-opus-4-1", date("2026-12-02"), Some(&reported)).expect("said");
        assert!(!n.retired && n.shutdown.is_none());
        assert_eq!(n.to_string(), "model claude-opus-4-1 is deprecated (source: the provider's model list)");
        let active = Reported { shutdown: None, status: Some("active".into()) };
        assert_eq!(notice(Provider::Anthropic, "claude-opus-4-1", date("2026-12-02"), Some(&active)), None);
    }

    #[test]
    fn temperature_only_where_models_take_it() {
        for m in ["gpt-4o", "gpt-4.1-mini", "gpt-4o-2024-08-06"] {
            assert_eq!(temperature(Provider::OpenAi, m), Some(true), "{m}");
        }
        for m in ["gpt-5.1", "gpt-5-mini", "o4-mini", "o3", "gpt-6-preview", "some-new-model"] {
            assert_eq!(temperature(Provider::OpenAi, m), Some(false), "{m}");
        }
        for m in ["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-1", "claude-3-5-sonnet-20241022"] {
            assert_eq!(temperature(Provider::Anthropic, m), Some(true), "{m}");
        }
        for m in ["claude-opus-4-7", "claude-opus-4-8", "claude-sonnet-5", "claude-opus-5-1-20270101"] {
            assert_eq!(temperature(Provider::Anthropic, m), Some(false), "{m}");
        }
        assert_eq!(temperature(Provider::AzureOpenAi, "gpt-4o"), None, "never guessed from a deployment name");
    }

    #[test]
    fn reasoning_controls() {
        assert_eq!(reasoning(Provider::OpenAi, "gpt-5.1"), Reasoning::Effort("low"));
        assert_eq!(reasoning(Provider::OpenAi, "o4-mini"), Reasoning::Effort("low"));
        assert_eq!(reasoning(Provider::OpenAi, "gpt-4.1"), Reasoning::None);
        assert_eq!(reasoning(Provider::OpenAi, "omni-moderation-latest"), Reasoning::None);
        assert_eq!(reasoning(Provider::Google, "gemini-3.5-flash"), Reasoning::ThinkingLevel("low"));
        assert_eq!(reasoning(Provider::Google, "models/gemini-2.5-flash-lite"), Reasoning::ThinkingBudget(512));
        assert_eq!(reasoning(Provider::AzureOpenAi, "o4-mini"), Reasoning::None);
        assert_eq!(reasoning(Provider::Anthropic, "claude-sonnet-5"), Reasoning::None);
    }
}
