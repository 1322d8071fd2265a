//! `ferry repository`: the restic-format repositories that hold the volume data.

use clap::Subcommand;
use ferry_shared::crd::BackupRepository;
use kube::ResourceExt;

use super::connect::Ferry;
use super::error::CliError;
use super::output::{Table, age, print};

#[derive(Debug, Subcommand)]
pub enum RepositoryCommand {
    /// List the repositories, with their last maintenance, or show the ones named.
    Get {
        /// Repositories to show; every repository when none is named.
        names: Vec<String>,
    },
}

pub async fn run(ferry: &Ferry, command: RepositoryCommand) -> Result<(), CliError> {
    let RepositoryCommand::Get { names } = command;
    let repositories: Vec<BackupRepository> =
        ferry.named_or_all("BackupRepository", &names).await?;
    print(
        &repositories,
        names.len() == 1,
        ferry.format,
        |repositories| {
            let mut table = Table::new(&[
                "NAME",
                "VOLUME NAMESPACE",
                "LOCATION",
                "PHASE",
                "LAST MAINTENANCE",
                "MESSAGE",
            ]);
            for repository in repositories {
                let status = repository.status.clone().unwrap_or_default();
                table.row(vec![
                    repository.name_any(),
                    repository.spec.volume_namespace.clone(),
                    repository.spec.storage_location.clone(),
                    format!("{:?}", status.phase),
                    status
                        .last_maintenance_time
                        .as_ref()
                        .map_or_else(|| "never".to_owned(), |t| format!("{} ago", age(Some(t)))),
                    status.message.unwrap_or_default(),
                ]);
            }
            table
        },
    )
}
