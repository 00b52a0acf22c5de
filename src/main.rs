//! The `pollstation` binary: parses arguments and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    pollstation::cli::run(pollstation::cli::Cli::parse())
}
