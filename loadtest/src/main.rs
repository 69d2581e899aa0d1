//! The `guestbook-loadtest` binary.
//!
//! Exit codes: 0 done (and, for `messages`, verified; for `stream`, every delivery made once);
//! 1 the exactly-once check failed, or a `stream` subscriber missed or repeated a message;
//! 2 bad usage; 3 the run could not be carried out (target unreachable, clear refused).

use std::process::ExitCode;

use clap::Parser;
use guestbook_loadtest::cli::{Cli, Command};
use guestbook_loadtest::messages::MessagesReport;
use guestbook_loadtest::progress::Progress;
use guestbook_loadtest::report::HttpReport;
use guestbook_loadtest::stream::report::StreamReport;

fn usage(problem: &str) -> ExitCode {
    eprintln!("error: {problem}");
    ExitCode::from(2)
}

fn could_not_run(problem: &anyhow::Error) -> ExitCode {
    eprintln!("error: {problem:#}");
    ExitCode::from(3)
}

/// Prints `report` on stdout: as pretty JSON with `--json`, else as its `table`.
#[allow(clippy::print_stdout)] // stdout is this tool's output
fn show(report: &impl serde::Serialize, json: bool, table: impl FnOnce() -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        print!("{}", table());
    }
}

/// Shows a checked run's report: exit code 0 when it passed, 1 when not, 3 when it could not
/// be carried out.
fn verdict<R: serde::Serialize>(
    report: anyhow::Result<R>,
    json: bool,
    table: impl FnOnce(&R) -> String,
    passed: impl FnOnce(&R) -> bool,
) -> ExitCode {
    let report = match report {
        Ok(report) => report,
        Err(err) => return could_not_run(&err),
    };
    show(&report, json, || table(&report));
    if passed(&report) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

// mimalloc rather than glibc's malloc, whose arena lock the tokio workers contended for under
// load; why, and what it measured: docs/design.md, "the allocator".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Messages(args) => {
            let run = match args.to_run() {
                Ok(run) => run,
                Err(problem) => return usage(&problem),
            };
            let report = Progress::around(Some(run.count as u64), "messages", |counter| {
                run.run(counter)
            })
            .await;
            verdict(report, args.json, MessagesReport::table, |report| {
                report.passed
            })
        }
        Command::Http(args) => {
            let load = match args.to_load() {
                Ok(load) => load,
                Err(problem) => return usage(&problem),
            };
            let run =
                Progress::around(load.requests, "requests", |counter| load.run(counter)).await;
            let report = HttpReport::new(&load, &run);
            if let Some(path) = &args.trace
                && let Err(err) = std::fs::write(path, run.trace_csv(load.schedule))
            {
                return could_not_run(&anyhow::anyhow!("writing {}: {err}", path.display()));
            }
            if let Some(path) = &args.plot
                && let Err(err) = guestbook_loadtest::plot::draw(&report, path)
            {
                return could_not_run(&err);
            }
            show(&report, args.json, || report.table());
            ExitCode::SUCCESS
        }
        Command::Stream(args) => {
            let run = match args.to_run() {
                Ok(run) => run,
                Err(problem) => return usage(&problem),
            };
            verdict(run.run().await, args.json, StreamReport::table, |report| {
                report.passed
            })
        }
    }
}
