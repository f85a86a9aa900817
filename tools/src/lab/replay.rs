//! `tapswitch replay`: pcap files in, pcap files out, through the live
//! switch's engine on virtual time (see [`playback`] for how).
//!
//! This module is the command around the lab: it reads the options, makes
//! the output files appear all at once or not at all (each is written under
//! a hidden temporary name and renamed when the whole run succeeded), prints
//! the summary, and compares with `--expect`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Result, bail};
use clap::Args;
use ports::capture::InterfaceChoice;
use switch::fabric::TraceSink;

use super::expect;
use super::notation::check_port_name;
use super::outputs::{OutFormat, OutputDir};
use super::playback::{self, GATEWAY_PORT_NAME, InputSpec, LabConfig, PortSpec};
use super::summary;
use crate::serve::DEFAULT_GATEWAY;

/// Options of `tapswitch replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// A port: NAME=FILE receives the frames of a pcap or pcapng file, NAME alone receives
    /// nothing but can send. Ports are numbered in the order given. FILE#N or FILE#IFNAME
    /// picks one interface of a pcapng file with several.
    #[arg(long = "port", value_name = "NAME[=FILE]", required = true)]
    pub ports: Vec<String>,
    /// Where to write NAME.pcap for every port (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub switch: crate::serve::SwitchOptions,
    /// Compare every output with DIR/NAME.pcap frame by frame; exit 1 at the first difference.
    #[arg(long, value_name = "DIR")]
    pub expect: Option<PathBuf>,
    /// The IP MTU of the replay ports: longer frames are dropped (too-big) on the way out.
    #[arg(long, value_name = "BYTES", default_value_t = 65_535)]
    pub mtu: usize,
    /// The format of the output files.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = OutFormat::Pcap)]
    pub out_format: OutFormat,
}

/// Runs `tapswitch replay`, printing to stdout.
pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    run_to(args, Box::new(io::stdout()))
}

/// Runs `tapswitch replay`, printing trace lines, the summary and any
/// difference from `--expect` to `out`.
pub fn run_to(args: ReplayArgs, out: Box<dyn Write + Send>) -> Result<ExitCode> {
    let (config, out) = config(&args, out)?;
    let format = config.format;
    let names: Vec<&str> = config.ports.iter().map(|p| p.name.as_str()).collect();
    if let Some(expect) = &args.expect {
        refuse_same_dir(&args.out, expect)?;
    }
    let (dir, writers) = OutputDir::prepare(&args.out, &names, format.extension())?;
    let outcome = playback::run(&config, writers)?;
    let written = dir.commit()?;

    let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
    out.write_all(summary::render(&outcome, &config).as_bytes())?;
    let mut code = ExitCode::SUCCESS;
    if let Some(expect_dir) = &args.expect {
        let ports: Vec<(&str, &Path)> = names
            .iter()
            .zip(&written)
            .map(|(name, path)| (*name, path.as_path()))
            .collect();
        match expect::compare_all(&ports, expect_dir)? {
            None => writeln!(
                out,
                "expect: all {} outputs match {}",
                ports.len(),
                expect_dir.display()
            )?,
            Some(difference) => {
                writeln!(out, "expect: {difference}")?;
                code = ExitCode::FAILURE;
            }
        }
    }
    out.flush()?;
    Ok(code)
}

type SharedOut = Arc<Mutex<io::BufWriter<Box<dyn Write + Send>>>>;

/// The lab's configuration from the options, and the shared output the
/// trace sink writes to.
fn config(args: &ReplayArgs, out: Box<dyn Write + Send>) -> Result<(LabConfig, SharedOut)> {
    let mut ports: Vec<PortSpec> = Vec::new();
    for spec in &args.ports {
        let port = parse_port(spec)?;
        if ports.iter().any(|p| p.name == port.name) {
            bail!(
                "Port {} is given twice: port names must be unique",
                port.name
            );
        }
        ports.push(port);
    }
    let gateway = args.switch.gateway_or(|| Ok(DEFAULT_GATEWAY))?;
    if gateway.is_some() && ports.iter().any(|p| p.name == GATEWAY_PORT_NAME) {
        bail!(
            "Port name {} is the gateway's: choose another name, or add --no-gateway",
            GATEWAY_PORT_NAME
        );
    }
    if args.mtu < 68 {
        bail!("--mtu {} is below IPv4's minimum of 68", args.mtu);
    }
    let out: SharedOut = Arc::new(Mutex::new(io::BufWriter::with_capacity(64 * 1024, out)));
    let trace = args.switch.trace.then(|| {
        let out = out.clone();
        let sink: Arc<TraceSink> = Arc::new(move |line: &str| {
            let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
            // A closed stdout (`| head`) must not stop the replay; the
            // summary's write reports it.
            let _ = writeln!(out, "{line}");
        });
        sink
    });
    let config = LabConfig {
        ports,
        table: args.switch.table(),
        gateway,
        mtu: args.mtu,
        format: args.out_format.into(),
        trace,
    };
    Ok((config, out))
}

/// `NAME`, `NAME=FILE`, `NAME=FILE#N` or `NAME=FILE#IFNAME`.
pub fn parse_port(spec: &str) -> Result<PortSpec> {
    let (name, file) = match spec.split_once('=') {
        Some((name, file)) => (name, Some(file)),
        None => (spec, None),
    };
    check_port_name(name)?;
    let input = match file {
        None => None,
        Some("") => bail!("--port {spec}: no file after '='"),
        // A file whose name has a '#' in it is taken as it is.
        Some(file) if Path::new(file).exists() => Some(InputSpec {
            path: file.into(),
            interface: None,
        }),
        Some(file) => match file.rsplit_once('#') {
            Some((path, choice)) if !choice.is_empty() => Some(InputSpec {
                path: path.into(),
                interface: Some(choice.parse::<InterfaceChoice>()?),
            }),
            _ => Some(InputSpec {
                path: file.into(),
                interface: None,
            }),
        },
    };
    Ok(PortSpec {
        name: name.to_string(),
        input,
    })
}

/// Comparing a directory with itself would compare the outputs with
/// themselves after overwriting the expected files.
fn refuse_same_dir(out: &Path, expect: &Path) -> Result<()> {
    if let (Ok(a), Ok(b)) = (out.canonicalize(), expect.canonicalize())
        && a == b
    {
        bail!(
            "--out and --expect are the same directory ({}): the outputs would replace what they are compared with",
            a.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs() {
        assert_eq!(
            parse_port("p3").unwrap(),
            PortSpec {
                name: "p3".into(),
                input: None
            }
        );
        let p = parse_port("p1=/nonexistent/in.pcapng#eth1").unwrap();
        let input = p.input.unwrap();
        assert_eq!(input.path, PathBuf::from("/nonexistent/in.pcapng"));
        assert_eq!(input.interface, Some(InterfaceChoice::Name("eth1".into())));
        let p = parse_port("p1=x.pcapng#2").unwrap();
        assert_eq!(p.input.unwrap().interface, Some(InterfaceChoice::Index(2)));
        for bad in ["", "../x=a.pcap", ".hidden", "a/b", "p1="] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }
}
