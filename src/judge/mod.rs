//! The judge: runs in the judge pod, scores cases, reports results to the broker.

pub mod wire;

pub mod cases;
pub mod client;
pub mod junit;
pub mod keyfile;
pub mod panel;
pub mod pin;
pub mod report;
pub mod runner;
pub mod scorers;
pub mod smoke;
pub mod summary;
