//! Custom resource types. Types and their schema only: no behaviour.

mod provider;

pub use provider::{AzureSpec, Provider};
