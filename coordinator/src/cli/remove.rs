//! `delete`: removes objects after a confirmation, which a script gives with `--confirm`.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;
use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use kube::api::DeleteParams;
use serde::de::DeserializeOwned;

use super::connect::Ferry;
use super::error::CliError;
use super::output::write_out;

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The objects to delete.
    #[arg(required = true)]
    names: Vec<String>,
    /// Delete without asking; needed where there is no terminal to ask on.
    #[arg(long)]
    confirm: bool,
}

/// Deletes the `kind` objects named in `args`, once confirmed; `note` says what deletion does.
pub async fn delete<K>(
    ferry: &Ferry,
    args: DeleteArgs,
    kind: &'static str,
    note: &str,
) -> Result<(), CliError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let question = format!("Delete {kind} {}? {note}.", args.names.join(", "));
    if !args.confirm && !confirmed(&question)? {
        return Err(CliError::Refused(format!("{kind} not deleted")));
    }
    let api = ferry.api::<K>();
    for name in &args.names {
        api.delete(name, &DeleteParams::default())
            .await
            .map_err(CliError::about(kind, name, &ferry.namespace))?;
        write_out(&format!("{kind} {name} deleted: {note}.\n"))?;
    }
    Ok(())
}

/// Asks `question` on the terminal; without one, refuses and says how to confirm.
pub fn confirmed(question: &str) -> Result<bool, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Refused(format!(
            "{question} There is no terminal to ask on: add --confirm"
        )));
    }
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{question} [y/N] ");
    let _ = stderr.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(CliError::io("cannot read the answer"))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
