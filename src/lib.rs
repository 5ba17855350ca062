//! byok-operator: bring-your-own-key LLM provider keys and LLM-as-judge evaluation jobs on Kubernetes.

pub mod bootstrap;
pub mod broker;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod crypto;
pub mod duration;
pub mod events;
pub mod failpoints;
pub mod judge;
pub mod judge_job;
pub mod keystore;
pub mod kms;
pub mod labels;
pub mod metrics;
/// The mock provider, a test double: the `mock` feature (tests, benches, byok-mock-provider) or
/// this crate's own unit tests; never in a production build.
#[cfg(any(test, feature = "mock"))]
pub mod mock;
pub mod names;
pub mod operator;
pub mod providers;
pub mod report;
