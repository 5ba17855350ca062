//! Crash points for the crash-consistency tests (`tests/crash.rs`). Only the `failpoints` cargo
//! feature compiles them in (tikv's `fail` crate); a production build has none: [`crash_point!`]
//! expands to nothing there. With the feature, `FAILPOINTS=<name>=return` (the `fail` crate's
//! syntax: `;` between points, `1*return` for once) makes the process exit at that point at once,
//! as a SIGKILL would there: no graceful shutdown, nothing after it written.

/// The exit code of a process stopped at a crash point, so a test can tell it from any other exit.
pub const EXIT_CODE: i32 = 86;

/// Between the ciphertext's apply and the source Secret's deletion (`sourcePolicy: Delete`).
pub const AFTER_STORE: &str = "byokkey-after-store";
/// Between a re-encryption under a new KEK and the status that names it.
pub const AFTER_RESEAL: &str = "byokkey-after-reseal";
/// Between the provider's answer and the status write that records it.
pub const AFTER_VALIDATE: &str = "byokkey-after-validate";

/// Arms the crash points named in `FAILPOINTS` for the life of the process; nothing without the
/// feature.
pub fn setup() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}

/// Ends the process where crash point `name` was reached.
pub fn crash(name: &str) -> ! {
    tracing::warn!(failpoint = name, "stopping at a crash point (FAILPOINTS)");
    std::process::exit(EXIT_CODE)
}

/// Stops the process here when `FAILPOINTS` arms `$name` (with the `failpoints` feature only).
#[macro_export]
macro_rules! crash_point {
    ($name:expr) => {
        #[cfg(feature = "failpoints")]
        {
            let _: Option<()> = fail::eval($name, |_| $crate::failpoints::crash($name));
        }
    };
}
