//! `tapswitch monitor [--json]` (the switch's events as they happen, like
//! `bridge monitor fdb`) and `tapswitch trace on|off [--port P]`.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, ValueEnum};
use switch::dataplane::TraceSettings;

use crate::control::{self, Request};
use crate::event_feed::StreamLine;
use crate::outln;
use crate::query::Target;

/// Options of `tapswitch monitor`.
#[derive(Debug, Clone, Args)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print one JSON object per event instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `tapswitch trace`.
#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// Turn the per-decision trace on or off.
    #[arg(value_enum)]
    pub state: OnOff,
    /// Only frames that arrive on or leave by this port.
    #[arg(long, value_name = "PORT")]
    pub port: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// Prints the switch's events until Ctrl-C, or until the switch goes away
/// (then says so and exits 1).
pub fn monitor(args: MonitorArgs) -> Result<ExitCode> {
    let path = args.target.socket();
    let stream = control::connect(&path)?;
    let (_, mut reader) = control::send(&path, &stream, &Request::Monitor)?;
    let mut line = String::new();
    let mut stdout = crate::pipe::stdout();
    loop {
        line.clear();
        let read = reader.read_line(&mut line);
        if matches!(read, Ok(0) | Err(_)) {
            eprintln!(
                "tapswitch: the switch at {} went away; monitor stops",
                path.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        let text = line.trim_end();
        // The switch's heartbeat on a quiet stream.
        if text.is_empty() {
            continue;
        }
        let out = if args.json {
            text.to_string()
        } else {
            match StreamLine::from_json(text) {
                Ok(event) => event.to_text(),
                Err(_) => format!("(unreadable event) {text}"),
            }
        };
        // `monitor | head` ends quietly, as Unix tools do (see `main`).
        writeln!(stdout, "{out}")?;
    }
}

/// `tapswitch trace on|off [--port P]`.
pub fn trace(args: TraceArgs) -> Result<ExitCode> {
    let request = Request::Trace {
        on: args.state == OnOff::On,
        port: args.port.clone(),
    };
    let settings: TraceSettings = control::call_as(&args.target.socket(), &request)?;
    let state = if settings.on { "on" } else { "off" };
    match (&settings.port, settings.on) {
        (Some(port), true) => outln!(
            "trace on for port {port}: lines on the switch's stderr and in `tapswitch monitor`"
        )?,
        (_, true) => outln!("trace on: lines on the switch's stderr and in `tapswitch monitor`")?,
        _ => outln!("trace {state}")?,
    }
    Ok(ExitCode::SUCCESS)
}
