//! Condition types and reasons shared by the controllers and the CLI.

/// ByokKey condition types.
pub mod byokkey {
    pub const READY: &str = "Ready";
    pub const IMPORTED: &str = "Imported";
    pub const VALIDATED: &str = "Validated";
    pub const DEFAULT: &str = "Default";
    /// True while the key's model is deprecated or shut down (a warning: the key still works).
    pub const MODEL_DEPRECATED: &str = super::MODEL_DEPRECATED;
}

/// EvalJob condition types.
pub mod evaljob {
    pub const KEY_RESOLVED: &str = "KeyResolved";
    pub const CASES_READY: &str = "CasesReady";
    pub const COMPLETE: &str = "Complete";
    pub const RESULTS_TRUSTED: &str = "ResultsTrusted";
    /// True when the judge model is deprecated or shut down, with the date.
    pub const MODEL_DEPRECATED: &str = super::MODEL_DEPRECATED;
}

/// Shared by both kinds: a model's lifecycle, and its reasons.
pub const MODEL_DEPRECATED: &str = "ModelDeprecated";
/// ModelDeprecated reasons (and, for Retired, the Validated reason of a key whose model is gone).
pub mod lifecycle {
    pub const DEPRECATED: &str = "Deprecated";
    pub const RETIRED: &str = "ModelRetired";
    pub const CURRENT: &str = "Current";
}
