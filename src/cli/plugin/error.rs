//! The plugin's errors: each says what went wrong and what to do about it.

/// An error of a `kubectl byok` command. Messages never carry key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or its input is wrong.
    #[error("{0}")]
    Usage(String),
    /// An object the command needs does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The command ran, but the outcome is a failure (an Invalid key, a Failed EvalJob).
    #[error("{0}")]
    Failed(String),
    /// The cluster did not reach the expected state in time.
    #[error("{0}")]
    Timeout(String),
    /// A Kubernetes API call failed.
    #[error("{what}: {}", describe(.source))]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// Reading a file or a terminal failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// No usable kubeconfig.
    #[error("cannot load the Kubernetes client configuration ({0}); set KUBECONFIG, or pass --kubeconfig/--context")]
    Config(String),
    /// The run completed and its pass criteria were not met (`eval run --wait`: exit 1).
    #[error("{0}")]
    GateFailed(String),
    /// `eval run --wait`: the run could not complete or be followed to its end (exit 2).
    #[error(transparent)]
    RunIncomplete(Box<Error>),
}

impl Error {
    /// Wraps a kube error with what was being done: `.map_err(Error::kube("creating Secret x"))`.
    pub fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let what = what.into();
        move |source| Error::Kube { what, source }
    }

    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// For `eval run --wait`, whose exit code tells a failed gate from a run that did not complete.
    pub fn unless_gate(self) -> Error {
        match self {
            Error::GateFailed(_) | Error::RunIncomplete(_) => self,
            other => Error::RunIncomplete(Box::new(other)),
        }
    }

    /// The process exit code: 1, except `eval run --wait` when the run did not complete (2).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::RunIncomplete(_) => 2,
            _ => 1,
        }
    }
}

/// The HTTP status of an API error, if the API server answered.
pub fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// A kube error in words, with a hint for the common cases.
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let hint = match s.code {
                401 => "; your credentials were refused: check the kubeconfig user",
                403 => "; your account lacks the RBAC permission for this: ask a cluster admin",
                404 if s.message.contains("the server could not find the requested resource") => {
                    "; the launchgate.ai CRDs are not installed: apply deploy/crds/"
                }
                409 => "; it already exists or changed meanwhile",
                _ => "",
            };
            format!("{}{hint}", s.message)
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            format!("cannot reach the API server ({e}); check KUBECONFIG, --context and the network")
        }
        other => other.to_string(),
    }
}
