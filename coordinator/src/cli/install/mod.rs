//! `ferry install` and `ferry uninstall`.
//!
//! Install is staged: the flags and files are checked and turned into a [`plan::Plan`] (pure,
//! and all `--dry-run` needs), then the plan is applied by server-side apply: the CRDs first,
//! established before anything of their kinds; the namespace, RBAC and workloads; the
//! Secrets; the default storage location. Then it waits for the workloads to run.

mod apply;
mod manifests;
mod plan;
mod uninstall;
mod wait;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use ferry_shared::names;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::Value;

use self::apply::Applier;
use self::plan::{PasswordPlan, Plan, StorageFlags};
use super::Global;
use super::connect;
use super::error::{CliError, root_cause};
use super::output;

/// How `ferry install` installs Ferry.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Ferry's image for the coordinator, the node agents and the restore helper; else the
    /// image the manifests name.
    #[arg(long)]
    image: Option<String>,
    #[command(flatten)]
    storage: StorageFlags,
    /// A file whose first line is the repository password; else a random one is generated
    /// and shown once. An existing password is always kept.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Print every manifest that would be applied (Secrets redacted) and apply nothing.
    #[arg(long)]
    dry_run: bool,
    /// Wait until the coordinator and every node agent are ready (the default).
    #[arg(long, overrides_with = "no_wait")]
    wait: bool,
    /// Return once everything is applied, without waiting for the coordinator and node agents.
    #[arg(long, overrides_with = "wait")]
    no_wait: bool,
    /// How long to wait for the CRDs to be established and for the workloads to be ready.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

impl InstallArgs {
    fn waits(&self) -> bool {
        self.wait || !self.no_wait
    }
}

/// How `ferry uninstall` removes Ferry.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Uninstall without asking; needed where there is no terminal to ask on.
    #[arg(long)]
    confirm: bool,
    /// Wait until the namespace, the cluster RBAC and the CRDs are gone.
    #[arg(long)]
    wait: bool,
    /// How long to wait for the coordinator to stop, and with --wait for everything to go.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Why an install or uninstall failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Flags(String),
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the password file {path} is empty: its first line must hold the password")]
    EmptyPassword { path: PathBuf },
    #[error("the secret file {path} is not an AWS credentials file with keys: {source}")]
    Credentials {
        path: PathBuf,
        #[source]
        source: ferry_shared::storage::LocationError,
    },
    #[error("the embedded manifest {path} does not parse: {source}")]
    ParseManifest {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("cannot write the manifests as YAML: {0}")]
    Encode(#[source] serde_yaml::Error),
    #[error("the cluster does not serve {kind}: {}", reason(.source))]
    Discover {
        kind: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot apply {kind} {name}: {}", reason(.source))]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot read {kind} {name}: {}", reason(.source))]
    Read {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "Secret {namespace}/{} holds another repository password than --password-file; install never replaces it (the backups made with it could not be read any more): leave out --password-file to keep it",
        names::REPOSITORY_SECRET
    )]
    PasswordDiffers { namespace: String },
    #[error("cannot make a random password: {0}")]
    Random(#[source] getrandom::Error),
    #[error("cannot create Secret {name}: {}", reason(.source))]
    CreateSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot watch CustomResourceDefinition {name}: {source}")]
    WaitEstablished {
        name: String,
        #[source]
        source: kube::runtime::wait::Error,
    },
    #[error(
        "CustomResourceDefinition {name} is not established after {}; look with `kubectl describe crd {name}`",
        humantime::format_duration(*.timeout)
    )]
    NotEstablished { name: String, timeout: Duration },
    #[error("{0}")]
    NotReady(String),
    #[error("uninstall cancelled; nothing was deleted")]
    Cancelled,
    #[error("cannot delete {kind} {name}: {}", reason(.source))]
    Delete {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot list {what}: {}", reason(.source))]
    List {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the coordinator's pods still run {} after its Deployment was deleted; nothing else was deleted: look with `kubectl -n {namespace} get pods`",
        humantime::format_duration(*.timeout)
    )]
    CoordinatorRunning {
        namespace: String,
        timeout: Duration,
    },
    #[error("cannot take the finalizer off Backup {name}: {}", reason(.source))]
    Release {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what} is still there after {}", humantime::format_duration(*.timeout))]
    NotGone { what: String, timeout: Duration },
}

/// What an API call's failure comes down to: the server's message, or the innermost cause.
fn reason(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.message.clone(),
        other => root_cause(other),
    }
}

/// Prints one line.
fn say(line: &str) -> Result<(), CliError> {
    output::write_out(&format!("{line}\n"))
}

pub async fn install(global: &Global, args: InstallArgs) -> Result<(), CliError> {
    args.storage.check()?;
    let given = args
        .password_file
        .as_deref()
        .map(read_password)
        .transpose()?;
    let credentials = args.storage.secret_file.as_deref();
    let credentials = credentials.map(read_credentials).transpose()?;
    let namespace = &global.namespace;
    let plan = Plan::new(
        namespace,
        args.image.as_deref(),
        &args.storage,
        credentials.as_deref(),
    )?;
    if args.dry_run {
        let password = plan::password_secret(namespace, given.as_deref().unwrap_or_default());
        return output::write_out(&plan.render(&password)?);
    }
    let client = connect::client(global).await?;
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let existing = existing_password(&secrets, namespace).await?;
    let password = plan::password_plan(existing.as_deref(), given.as_deref(), namespace)?;

    let mut applier = Applier::new(client.clone());
    apply::crds(&mut applier, &plan.crds, args.timeout).await?;
    say(&format!(
        "applied {} CustomResourceDefinitions, established",
        plan.crds.len()
    ))?;
    // The password goes in before the coordinator can start: a coordinator that finds none
    // makes one of its own, which nobody would have seen.
    let (namespaces, workloads): (Vec<Value>, Vec<Value>) = plan
        .objects
        .iter()
        .cloned()
        .partition(|object| manifests::kind(object) == "Namespace");
    apply_each(&mut applier, &namespaces).await?;
    store_password(&secrets, namespace, password).await?;
    apply_each(&mut applier, &workloads).await?;
    apply_each(&mut applier, &plan.storage).await?;
    let agents = if args.waits() {
        let (_, agents) = wait::until_ready(&client, namespace, args.timeout).await?;
        Some(agents.ready)
    } else {
        None
    };
    say(&summary(&plan, &args.storage, agents))
}

/// The first line of the password file, trimmed.
fn read_password(path: &Path) -> Result<String, InstallError> {
    let text = std::fs::read_to_string(path).map_err(|source| InstallError::ReadFile {
        what: "the password file",
        path: path.to_owned(),
        source,
    })?;
    let password = text.lines().next().unwrap_or_default().trim();
    if password.is_empty() {
        return Err(InstallError::EmptyPassword {
            path: path.to_owned(),
        });
    }
    Ok(password.to_owned())
}

/// The secret file's text, once it is known to hold S3 keys.
fn read_credentials(path: &Path) -> Result<String, InstallError> {
    let text = std::fs::read_to_string(path).map_err(|source| InstallError::ReadFile {
        what: "the secret file",
        path: path.to_owned(),
        source,
    })?;
    ferry_shared::storage::parse_aws_credentials(&text).map_err(|source| {
        InstallError::Credentials {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(text)
}

/// The repository password the cluster holds, if its Secret exists.
async fn existing_password(
    secrets: &Api<Secret>,
    namespace: &str,
) -> Result<Option<String>, InstallError> {
    let name = names::REPOSITORY_SECRET;
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|source| InstallError::Read {
            kind: "Secret",
            name: format!("{namespace}/{name}"),
            source,
        })?;
    Ok(secret.map(|secret| {
        let value = secret
            .data
            .and_then(|mut data| data.remove(names::REPOSITORY_PASSWORD_KEY));
        value
            .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
            .unwrap_or_default()
    }))
}

/// Creates the repository password's Secret as planned, never over an existing one, and says
/// what became of the password. A generated one is shown here, once.
async fn store_password(
    secrets: &Api<Secret>,
    namespace: &str,
    password: PasswordPlan,
) -> Result<(), CliError> {
    let secret = format!("Secret {namespace}/{}", names::REPOSITORY_SECRET);
    let (password, generated) = match password {
        PasswordPlan::Keep => {
            return say(&format!(
                "kept the existing repository password in {secret}; install never replaces it"
            ));
        }
        PasswordPlan::Given(password) => (password, false),
        PasswordPlan::Generate => {
            let password = crate::password::random_password().map_err(InstallError::Random)?;
            (password, true)
        }
    };
    let object: Secret = serde_json::from_value(plan::password_secret(namespace, &password))
        .map_err(|err| CliError::Refused(format!("cannot build {secret}: {err}")))?;
    secrets
        .create(&PostParams::default(), &object)
        .await
        .map_err(|source| InstallError::CreateSecret {
            name: format!("{namespace}/{}", names::REPOSITORY_SECRET),
            source,
        })?;
    if !generated {
        return say(&format!(
            "stored the repository password of --password-file in {secret}"
        ));
    }
    say(&format!(
        "\nGenerated the repository password. It is shown this once:\n\n    {password}\n\n\
         Keep a copy somewhere safe, outside the cluster: every backup is encrypted with it, \
         and without it no backup can be read, by Ferry or by restic. It is stored in \
         {secret}, key {}.\n",
        names::REPOSITORY_PASSWORD_KEY
    ))
}

/// Applies each object in turn, saying so.
async fn apply_each(applier: &mut Applier, objects: &[Value]) -> Result<(), CliError> {
    for object in objects {
        applier.apply(object).await?;
        say(&format!(
            "applied {} {}",
            manifests::kind(object),
            manifests::name(object)
        ))?;
    }
    Ok(())
}

/// What was installed, and the next step.
fn summary(plan: &Plan, storage: &StorageFlags, agents: Option<i32>) -> String {
    let namespace = &plan.namespace;
    let running = match agents {
        Some(1) => "the coordinator and the node agent are ready".to_owned(),
        Some(agents) => format!("the coordinator and {agents} node agents are ready"),
        None => format!("not waiting for the workloads: `kubectl -n {namespace} get pods`"),
    };
    let flags = &storage.location;
    let location = match (&flags.path, &flags.bucket) {
        _ if flags.provider.is_none() => "No storage location was created: run install \
            again with --provider, or create a BackupStorageLocation, before the first backup."
            .to_owned(),
        (Some(path), _) => format!(
            "Storage location {} keeps backups in {path}, which the coordinator and every node \
             agent must see at that path.",
            plan::LOCATION
        ),
        (_, bucket) => format!(
            "Storage location {} keeps backups in bucket {}.",
            plan::LOCATION,
            bucket.as_deref().unwrap_or_default()
        ),
    };
    format!(
        "\nFerry is installed in namespace {namespace} with image {}; {running}.\n{location}\n\
         Next, back up a namespace:\n\n    ferry backup create NAME --include-namespaces NAMESPACE\n",
        plan.image
    )
}

/// Removes Ferry, in an order that keeps every backup's data:
///
/// 1. The coordinator's Deployment, and a wait until its pods are gone. The coordinator runs
///    the Backups' finalizer, which deletes a Backup's data from its storage location when the
///    Backup is deleted; from here on nothing runs it, or puts it back.
/// 2. Ferry's finalizer off every Backup. Deleting them below then leaves their data, and
///    no Backup holds up its namespace or CRD waiting for a finalizer that will never run.
/// 3. The install namespace, which takes the node agents, the Secrets (the repository password
///    with them), the namespace's RBAC and the Ferry objects in it; then the cluster RBAC.
/// 4. The CRDs, last, which take every Ferry object left anywhere.
/// 5. With `--wait`, a wait until all of it is gone.
pub async fn uninstall(global: &Global, args: UninstallArgs) -> Result<(), CliError> {
    let namespace = &global.namespace;
    let mut objects = manifests::objects()?;
    manifests::set_namespace(&mut objects, namespace);
    let targets = uninstall::targets(objects);
    uninstall::confirm(args.confirm, namespace)?;
    let client = connect::client(global).await?;
    uninstall::stop_coordinator(&client, namespace, args.timeout).await?;
    uninstall::release_backups(&client).await?;
    let mut applier = Applier::new(client);
    uninstall::delete(&mut applier, &targets).await?;
    if args.wait {
        uninstall::until_gone(&mut applier, &targets, args.timeout).await?;
    }
    say(&format!(
        "\nFerry is uninstalled from namespace {namespace}. The data in the storage locations \
         is kept: a new install with the same storage location and the same repository \
         password (--password-file) reads those backups again."
    ))
}
