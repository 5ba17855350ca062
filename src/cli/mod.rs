//! Command-line pieces shared by the binaries.

pub mod kek;
pub mod plugin;
