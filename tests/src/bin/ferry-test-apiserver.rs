//! Runs Ferry's Kubernetes test API server on its own, as an external API server for the suite
//! (`scripts/e2e-external.sh`) or for manual use:
//! `cargo run -p ferry-tests --bin ferry-test-apiserver -- --port 8001 --kubeconfig /tmp/kubeconfig --crds deploy/crds`
//! then `KUBECONFIG=/tmp/kubeconfig kubectl get crds`.

use std::path::PathBuf;

use clap::Parser;
use ferry_tests::apiserver::TestApiServer;

/// Serves the Kubernetes API subset Ferry uses, over plain HTTP on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port to listen on; 0 takes an ephemeral one.
    #[arg(long, env = "FERRY_TEST_APISERVER_PORT", default_value_t = 0)]
    port: u16,
    /// Where to write a kubeconfig that points at the server.
    #[arg(long, env = "FERRY_TEST_APISERVER_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// CustomResourceDefinitions to serve from the start: a YAML file or a directory of them.
    /// Without it the server starts with none, as a cluster Ferry was never installed on.
    #[arg(long, env = "FERRY_TEST_APISERVER_CRDS")]
    crds: Option<PathBuf>,
    /// Events per resource kept for watches; older resourceVersions get 410 Gone.
    #[arg(long, env = "FERRY_TEST_APISERVER_HISTORY", default_value_t = 1000)]
    history_limit: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut builder = TestApiServer::builder();
    if let Some(crds) = &args.crds {
        builder = builder.crds_from(crds)?;
    }
    let server = builder
        .port(args.port)
        .history_limit(args.history_limit)
        .start()
        .await?;
    if let Some(path) = &args.kubeconfig {
        server.write_kubeconfig(path)?;
        println!("kubeconfig: {}", path.display());
    }
    println!("serving on {}", server.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Args;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }
}
