//! The `tlsledger` binary: parses the command line, runs the subcommand, maps errors to exit codes.
//!
//! Exit codes: 0 success (also when stdout is closed early, e.g. `| head`), 2 on any error,
//! printed as one line with its causes.

use std::process::ExitCode;

use clap::Parser;
use tlsledger::cli::{Cli, Command};
use tlsledger::commands;

/// mimalloc: the parse path allocates and frees many small strings per observation on one thread
/// while others parse; glibc malloc spent about 8 % of the CPU time of `parse` on it. Version 2
/// of mimalloc (feature `v2`): the crate passes every Rust allocation to `mi_malloc_aligned`, and
/// version 3 sends sizes whose block is not a power of two to its slow over-allocating path (a
/// known problem of the crate); with v2 the correlating thread ran 3 % fewer instructions
/// (callgrind) and the peak RSS of `bench/parse.sh`'s run was 26 MB instead of 28 MB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            for cause in err.chain() {
                let kind = cause
                    .downcast_ref::<std::io::Error>()
                    .map(std::io::Error::kind)
                    .or_else(|| cause.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind));
                if kind == Some(std::io::ErrorKind::BrokenPipe) {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("tlsledger: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Transparent huge pages off for this process (the kernel's `always` mode is common). mimalloc
/// returns freed memory to the kernel in 4 KiB pieces; under `always`, touching such memory again
/// faults in and zeroes a whole 2 MiB page, over and over: in `bench/clickhouse.sh` that was
/// 0.7-0.9 s of kernel time per 100 MB of log (0.2-0.3 s without huge pages), and resident memory
/// grows with it. It is what `MIMALLOC_ALLOW_THP=0` does at start-up. Failing (an old kernel)
/// leaves the kernel's default in place.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Parse(args) => {
            let summary = commands::parse::run(&args)?;
            if args.stats {
                eprint!("{}", commands::parse::format_stats(&summary));
            }
            Ok(())
        }
        Command::Ingest(args) => commands::ingest::run(&args),
        Command::Milter(args) => commands::milter::run(&args),
        Command::Schema(command) => commands::schema::run(&command),
        Command::Explain(args) => commands::explain::run(&args),
        Command::Feed(args) => commands::feed::run(&args),
        Command::Serve(args) => commands::serve::run(&args),
        Command::Reputation(command) => commands::reputation::run(&command),
        Command::Report(args) => commands::report::run(&args),
    }
}
