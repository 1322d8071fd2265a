//! `ferry`: Ferry's command line.

fn main() -> std::process::ExitCode {
    ferry_coordinator::cli::main()
}
