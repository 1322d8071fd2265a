//! Why a `ferry` command failed: one line for the user, and exit code 1.

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("no cluster to talk to: {0}")]
    NoCluster(String),
    #[error("cannot reach the cluster{0}")]
    Unreachable(String),
    #[error("Ferry is not installed in this cluster (its CRDs are missing): run `ferry install`")]
    NotInstalled,
    #[error(
        "namespace {0:?} does not exist: Ferry is not installed there (-n names the install namespace)"
    )]
    NoNamespace(String),
    #[error("{kind} {name:?} does not exist in namespace {namespace:?}")]
    NotFound {
        kind: &'static str,
        name: String,
        namespace: String,
    },
    #[error("{kind} {name:?} already exists in namespace {namespace:?}")]
    AlreadyExists {
        kind: &'static str,
        name: String,
        namespace: String,
    },
    #[error("{0}")]
    InvalidFlag(String),
    #[error("the API server refused: {0}")]
    Api(String),
    #[error("{kind} {name} ended {phase}")]
    Unsuccessful {
        kind: &'static str,
        name: String,
        phase: String,
    },
    #[error("{0}")]
    Download(String),
    #[error(
        "the coordinator did not answer within {0:?}: is it running? (`kubectl -n <namespace> get pods`)"
    )]
    NoAnswer(std::time::Duration),
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Install(#[from] super::install::InstallError),
}

impl CliError {
    /// An error of an API call on the existing `kind` object `name` in `namespace`: a 404 is
    /// said in the object's words.
    pub fn about(kind: &'static str, name: &str, namespace: &str) -> impl Fn(kube::Error) -> Self {
        let (name, namespace) = (name.to_owned(), namespace.to_owned());
        move |err| match &err {
            kube::Error::Api(status) if status.code == 404 => Self::NotFound {
                kind,
                name: name.clone(),
                namespace: namespace.clone(),
            },
            _ => Self::from_kube(err),
        }
    }

    /// An error of creating the `kind` object `name` in `namespace`: a 409 is a name already
    /// taken, and a 404 a namespace that is gone.
    pub fn creating(
        kind: &'static str,
        name: &str,
        namespace: &str,
    ) -> impl Fn(kube::Error) -> Self {
        let (name, namespace) = (name.to_owned(), namespace.to_owned());
        move |err| match &err {
            kube::Error::Api(status) if status.code == 409 => Self::AlreadyExists {
                kind,
                name: name.clone(),
                namespace: namespace.clone(),
            },
            kube::Error::Api(status) if status.code == 404 => Self::NoNamespace(namespace.clone()),
            _ => Self::from_kube(err),
        }
    }

    /// A failed API call: the server's refusal, or no way to reach it.
    pub fn from_kube(err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => Self::Api(status.message),
            kube::Error::SerdeError(err) => Self::Refused(format!(
                "cannot read the API server's answer ({err}): is this ferry of the same version as the Ferry installed?"
            )),
            other => Self::Unreachable(format!(": {}", root_cause(&other))),
        }
    }

    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// The innermost cause of an error, which says what went wrong in the fewest words (such as
/// "Connection refused").
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}
