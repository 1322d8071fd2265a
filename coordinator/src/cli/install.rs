//! `ferry install` and `ferry uninstall`.

use clap::Args;

use super::Global;
use super::error::CliError;

/// How `ferry install` installs Ferry.
#[derive(Debug, Args)]
pub struct InstallArgs {}

/// How `ferry uninstall` removes Ferry.
#[derive(Debug, Args)]
pub struct UninstallArgs {}

/// Why an install or uninstall failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {}

pub async fn install(_global: &Global, _args: InstallArgs) -> Result<(), CliError> {
    todo!()
}

pub async fn uninstall(_global: &Global, _args: UninstallArgs) -> Result<(), CliError> {
    todo!()
}
