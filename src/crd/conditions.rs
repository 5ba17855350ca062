//! Condition types and reasons shared by the controllers and the CLI.

/// ByokKey condition types.
pub mod byokkey {
    pub const READY: &str = "Ready";
    pub const IMPORTED: &str = "Imported";
    pub const VALIDATED: &str = "Validated";
    pub const DEFAULT: &str = "Default";
}
