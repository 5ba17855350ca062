//! What a run's tokens cost: a built-in price table per model (dated, with its sources), which a
//! YAML or JSON file can override model by model (`--prices FILE`). An estimate, never a bill:
//! it ignores caching, batch discounts, long-context tiers and contract prices.

use serde::{Deserialize, Serialize};

use crate::crd::{Provider, TokenUsage};

/// When the built-in rows were last checked against their sources.
pub const BUILTIN_DATE: &str = "2026-12-02";
const BUILTIN_SOURCE: &str = "the providers' pricing pages (standard tier, USD per 1M tokens), as mirrored by \
     third-party price lists; each row names its source";

const OPENAI: &str = "openai.com/api/pricing";
const ANTHROPIC: &str = "claude.com/pricing";
const GOOGLE: &str = "ai.google.dev/gemini-api/docs/pricing";

/// (provider, model, input, output per 1M tokens, source): the default judge models
/// (`providers::models::DEFAULT_MODELS`) and a few others people judge with.
const BUILTIN: &[(Provider, &str, f64, f64, &str)] = &[
    (Provider::OpenAi, "gpt-5.1", 1.25, 10.0, OPENAI),
    (Provider::OpenAi, "gpt-5", 1.25, 10.0, OPENAI),
    (Provider::OpenAi, "gpt-5-mini", 0.25, 2.0, OPENAI),
    (Provider::OpenAi, "gpt-4.1", 2.0, 8.0, OPENAI),
    (Provider::OpenAi, "gpt-4o", 2.5, 10.0, OPENAI),
    (Provider::OpenAi, "gpt-4o-mini", 0.15, 0.6, OPENAI),
    (Provider::Anthropic, "claude-sonnet-4-6", 3.0, 15.0, ANTHROPIC),
    (Provider::Anthropic, "claude-sonnet-4-5", 3.0, 15.0, ANTHROPIC),
    (Provider::Anthropic, "claude-haiku-4-5", 1.0, 5.0, ANTHROPIC),
    (Provider::Google, "gemini-3.5-flash", 1.5, 9.0, GOOGLE),
    (
        Provider::Google,
        "gemini-2.5-pro",
        1.25,
        10.0,
        "ai.google.dev/gemini-api/docs/pricing (prompts up to 200k tokens)",
    ),
    (Provider::Google, "gemini-2.5-flash", 0.3, 2.5, GOOGLE),
];

/// A price table, as a `--prices` file writes it (YAML or JSON).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriceTable {
    /// When the prices were taken, e.g. `2026-12-01`.
    pub date: String,
    /// Where they come from (a pricing page, a contract).
    pub source: String,
    #[serde(default = "usd")]
    pub currency: String,
    pub models: Vec<ModelPrice>,
}

fn usd() -> String {
    "USD".to_string()
}

/// The price of one model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelPrice {
    /// The provider the row is for; any provider when absent (an Azure OpenAI deployment's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// The model id as the EvalJob's status names it (a dated snapshot id finds its model's row).
    pub model: String,
    pub input_per_million: f64,
    pub output_per_million: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Why a `--prices` file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum PricesError {
    #[error(
        "not a price table ({0}); expected date, source, currency (optional) and models: [{{provider, model, inputPerMillion, outputPerMillion}}]"
    )]
    Parse(#[from] serde_yaml::Error),
    #[error("model {model}: {what} must be a finite number of at least 0, not {value}")]
    BadPrice { model: String, what: &'static str, value: f64 },
    #[error("the price table lists no models")]
    Empty,
}

impl PriceTable {
    /// The table this version ships.
    pub fn builtin() -> Self {
        let models = BUILTIN
            .iter()
            .map(|&(provider, model, input, output, source)| ModelPrice {
                provider: Some(provider),
                model: model.to_string(),
                input_per_million: input,
                output_per_million: output,
                source: Some(source.to_string()),
            })
            .collect();
        Self { date: BUILTIN_DATE.into(), source: BUILTIN_SOURCE.into(), currency: usd(), models }
    }

    /// Reads a `--prices` file (YAML, or JSON, which YAML reads too).
    pub fn parse(text: &str) -> Result<Self, PricesError> {
        let table: Self = serde_yaml::from_str(text)?;
        if table.models.is_empty() {
            return Err(PricesError::Empty);
        }
        for m in &table.models {
            for (what, value) in [("inputPerMillion", m.input_per_million), ("outputPerMillion", m.output_per_million)]
            {
                if !value.is_finite() || value < 0.0 {
                    return Err(PricesError::BadPrice { model: m.model.clone(), what, value });
                }
            }
        }
        Ok(table)
    }

    /// The row for a model: the exact id first, then the id without a date suffix
    /// (`gpt-5.1-2025-11-13`, `claude-sonnet-4-5-20250929`); a row for the provider wins over one for any.
    fn find(&self, provider: Provider, model: &str) -> Option<&ModelPrice> {
        let ids = [Some(model), undated(model)];
        ids.into_iter().flatten().find_map(|id| {
            let rows = self.models.iter().filter(|m| m.model == id);
            let (mut exact, mut any) = (None, None);
            for row in rows {
                match row.provider {
                    Some(p) if p == provider => exact = exact.or(Some(row)),
                    None => any = any.or(Some(row)),
                    Some(_) => {}
                }
            }
            exact.or(any)
        })
    }
}

/// `model` without a trailing `-YYYY-MM-DD` or `-YYYYMMDD`, if it has one.
fn undated(model: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (base, last) = model.rsplit_once('-')?;
    if last.len() == 8 && digits(last) {
        return Some(base);
    }
    let mut parts = model.rsplitn(4, '-');
    let (day, month, year, base) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let dated = day.len() == 2 && month.len() == 2 && year.len() == 4 && [day, month, year].into_iter().all(digits);
    dated.then_some(base)
}

/// The tables a cost is looked up in: a `--prices` file first, then the built-in one.
#[derive(Clone, Debug)]
pub struct Prices {
    pub file: Option<PriceTable>,
    pub builtin: PriceTable,
}

impl Default for Prices {
    fn default() -> Self {
        Self { file: None, builtin: PriceTable::builtin() }
    }
}

/// What a run's tokens cost, and the price it was computed with.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    pub amount: f64,
    pub currency: String,
    pub price: ModelPrice,
    /// The table's date and source.
    pub table_date: String,
    pub table_source: String,
    /// Whether the price came from a `--prices` file.
    pub from_file: bool,
}

impl Prices {
    /// The estimated cost of `usage` with `model`, or None when no table prices the model.
    pub fn estimate(&self, provider: Provider, model: &str, usage: &TokenUsage) -> Option<Cost> {
        let from_file = self.file.as_ref().and_then(|t| Some((t, t.find(provider, model)?)));
        let (table, price, from_file) = match from_file {
            Some((table, price)) => (table, price, true),
            None => (&self.builtin, self.builtin.find(provider, model)?, false),
        };
        let tokens = |n: i64| n.max(0) as f64 / 1_000_000.0;
        let amount = tokens(usage.input_tokens) * price.input_per_million
            + tokens(usage.output_tokens) * price.output_per_million;
        Some(Cost {
            amount,
            currency: table.currency.clone(),
            price: price.clone(),
            table_date: table.date.clone(),
            table_source: table.source.clone(),
            from_file,
        })
    }
}

/// An amount of money with as many decimals as it takes to show its size: 12.35, 0.0421, 0.000135.
pub fn money(amount: f64, currency: &str) -> String {
    let decimals = if amount >= 1.0 || amount == 0.0 {
        2
    } else if amount >= 0.01 {
        4
    } else {
        6
    };
    match currency {
        "USD" => format!("${amount:.decimals$}"),
        other => format!("{amount:.decimals$} {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: i64, output: i64) -> TokenUsage {
        TokenUsage { input_tokens: input, output_tokens: output }
    }

    #[test]
    fn builtin_prices_every_default_model() {
        let prices = Prices::default();
        for (provider, model) in crate::providers::models::DEFAULT_MODELS {
            assert!(prices.estimate(provider, model, &usage(1, 1)).is_some(), "{model} has no built-in price");
        }
        let cost = prices.estimate(Provider::OpenAi, "gpt-5.1", &usage(2_000_000, 500_000)).expect("priced");
        assert!((cost.amount - (2.0 * 1.25 + 0.5 * 10.0)).abs() < 1e-9, "{cost:?}");
        assert_eq!((cost.currency.as_str(), cost.table_date.as_str(), cost.from_file), ("USD", BUILTIN_DATE, false));
        assert!(cost.price.source.as_deref().is_some_and(|s| s.contains("openai.com")));
    }

    #[test]
    fn dated_snapshots_find_their_model_and_providers_do_not_mix() {
        let prices = Prices::default();
        let snapshot = prices.estimate(Provider::Anthropic, "claude-sonnet-4-5-20250929", &usage(1_000_000, 0));
        assert_eq!(snapshot.map(|c| c.price.model), Some("claude-sonnet-4-5".to_string()));
        let snapshot = prices.estimate(Provider::OpenAi, "gpt-4o-2024-08-06", &usage(1_000_000, 0));
        assert_eq!(snapshot.map(|c| c.amount), Some(2.5));
        assert_eq!(prices.estimate(Provider::OpenAi, "gpt-5-pro", &usage(1, 1)), None, "never a neighbour's price");
        assert_eq!(prices.estimate(Provider::AzureOpenAi, "gpt-5.1", &usage(1, 1)), None, "Azure is not OpenAI");
        assert_eq!(undated("o3-mini"), None);
        assert_eq!(undated("gemini-2.5-flash"), None);
    }

    #[test]
    fn a_file_overrides_model_by_model_and_the_rest_stays_builtin() {
        let yaml = "date: 2026-11-30\nsource: our contract\ncurrency: EUR\nmodels:\n\
                    - {provider: openai, model: gpt-5.1, inputPerMillion: 1, outputPerMillion: 8}\n\
                    - {model: my-azure-deployment, inputPerMillion: 2, outputPerMillion: 4, source: portal}\n";
        let prices = Prices { file: Some(PriceTable::parse(yaml).expect("parses")), ..Prices::default() };
        let cost = prices.estimate(Provider::OpenAi, "gpt-5.1", &usage(1_000_000, 1_000_000)).expect("priced");
        assert_eq!((cost.amount, cost.currency.as_str(), cost.from_file), (9.0, "EUR", true));
        assert_eq!(cost.table_source, "our contract");
        let azure = prices.estimate(Provider::AzureOpenAi, "my-azure-deployment", &usage(0, 500_000)).expect("any");
        assert_eq!(azure.amount, 2.0);
        let builtin = prices.estimate(Provider::Anthropic, "claude-sonnet-4-6", &usage(1_000_000, 0)).expect("priced");
        assert_eq!((builtin.amount, builtin.from_file), (3.0, false));
        // JSON is YAML too.
        let json = r#"{"date":"d","source":"s","models":[{"model":"m","inputPerMillion":0,"outputPerMillion":0.5}]}"#;
        assert_eq!(PriceTable::parse(json).expect("json").currency, "USD");
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let typo = "date: d\nsource: s\nmodels: [{model: m, inputPerMilion: 1, outputPerMillion: 1}]";
        assert!(PriceTable::parse(typo).expect_err("typo").to_string().contains("inputPerMilion"));
        let negative = "date: d\nsource: s\nmodels: [{model: m, inputPerMillion: -1, outputPerMillion: 1}]";
        assert!(matches!(PriceTable::parse(negative), Err(PricesError::BadPrice { what: "inputPerMillion", .. })));
        assert!(matches!(PriceTable::parse("date: d\nsource: s\nmodels: []"), Err(PricesError::Empty)));
        assert!(matches!(PriceTable::parse("[1, 2"), Err(PricesError::Parse(_))));
    }

    #[test]
    fn money_shows_the_size() {
        assert_eq!(money(12.345, "USD"), "$12.35");
        assert_eq!(money(0.04213, "USD"), "$0.0421");
        assert_eq!(money(0.000135, "USD"), "$0.000135");
        assert_eq!(money(0.0, "EUR"), "0.00 EUR");
    }
}
