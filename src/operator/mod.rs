//! The operator process: what `byok-operator run` wires together around the controllers. It
//! loads or creates the operator's own Secrets (KEK keyring, sealing key, broker CA), follows the
//! keyring and the log level, takes the leader lease, then starts the controllers
//! (`crate::controller`) and the key broker (`crate::broker`). Nothing below `src/operator`
//! imports it; the controllers never start anything themselves.

mod heap;
pub mod kek_state;
pub mod keyring;
pub mod leader;
pub mod loglevel;
pub mod sealing;
mod start;
pub mod version;

pub use start::{BrokerConfig, run};
