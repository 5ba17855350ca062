//! The judge: runs in the judge pod, scores cases, reports results to the broker.

pub mod wire;
