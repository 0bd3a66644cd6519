//! The `mammoflow` binary: parse arguments, run the command, print errors as a chain and exit 2.

fn main() {
    std::process::exit(mammoflow::cli::main());
}
