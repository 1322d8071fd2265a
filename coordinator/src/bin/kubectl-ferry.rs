//! `kubectl-ferry`: Ferry's command line as a kubectl plugin, so that `kubectl ferry …` works.

fn main() -> std::process::ExitCode {
    ferry_coordinator::cli::main()
}
