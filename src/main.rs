use std::process::ExitCode;

use clap::Parser;

use authgate::cli::{self, Cli};

fn main() -> ExitCode {
    cli::run(Cli::parse())
}
