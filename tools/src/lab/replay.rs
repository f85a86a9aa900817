//! `tapswitch replay`: pcap files in, pcap files out, through the live
//! switch's engine on virtual time (see [`playback`] for how).
//!
//! This module is the command around the lab: it reads the options, makes
//! the output files appear all at once or not at all (see [`OutputDir`]),
//! prints the summary, and compares with `--expect`.
//!
//! Streams and exit codes follow `diff` and `cmp`: the trace lines and the
//! summary go to stdout; differences, warnings, errors and the progress
//! line to stderr. The exit code is 0 when the outputs match (or nothing was
//! compared), 1 when they differ, 2 on trouble (the binary maps an error to
//! 2, as clap does for bad arguments). A stdout closed early (`| head`) does
//! not stop the run: the outputs are still written and compared.

use std::io::{self, IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant as WallClock};

use anyhow::{Result, anyhow, bail};
use clap::Args;
use ports::capture::InterfaceChoice;
use ports::wire::vxlan;
use switch::fabric::TraceSink;
use switch::{Instant, MacAddr, PortId, TableConfig};

use super::expect;
use super::notation::{check_port_name, count};
use super::outputs::{OutFormat, OutputDir, Policy};
use super::playback::{
    self, GATEWAY_PORT_NAME, InputSpec, LabConfig, PortSpec, ProgressSink, STDIN_PATH,
};
use super::summary::{self, ExpectReport};
use super::underlay::TunnelSpec;
use crate::overlay::parse_peer;
use crate::serve::{DEFAULT_GATEWAY, parse_gateway};

/// The exit code for trouble (an unreadable input, bad arguments), as `diff`.
pub const EXIT_TROUBLE: u8 = 2;

/// A progress line appears once a run has taken this long.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

/// Options of `tapswitch replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// A port: NAME=FILE receives the frames of a pcap or pcapng file ("-" for stdin), NAME
    /// alone receives nothing but can send. Ports are numbered in the order given. FILE#N or
    /// FILE#IFNAME picks one interface of a pcapng file with several.
    #[arg(long = "port", value_name = "NAME[=FILE]", required = true)]
    pub ports: Vec<String>,
    /// Where to write NAME.pcap for every port (created if missing). After the run it holds
    /// exactly this run's files: outputs of an earlier replay are removed, anything else
    /// there is refused.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Seconds a silent host stays in the MAC table, in capture time; 0 = forever.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = parse_seconds,
          allow_hyphen_values = true)]
    pub ageing_time: u64,
    /// The most MAC addresses the table learns.
    #[arg(long, value_name = "N", default_value_t = switch::mac_table::DEFAULT_CAPACITY)]
    pub max_macs: usize,
    /// The gateway's address and prefix (default: 172.17.0.1/16).
    #[arg(long, value_name = "CIDR", conflicts_with = "no_gateway")]
    pub gateway: Option<String>,
    /// Run without a gateway.
    #[arg(long)]
    pub no_gateway: bool,
    /// Print one line per forwarding decision (on stdout; on stderr with --json).
    #[arg(long)]
    pub trace: bool,
    /// Compare the outputs with DIR both ways: every port's with DIR/NAME.pcap frame by frame,
    /// and every capture in DIR with a port. Exit 0 same, 1 different, 2 trouble.
    #[arg(long, value_name = "DIR")]
    pub expect: Option<PathBuf>,
    /// The IP MTU of the replay ports (68 to 65535): longer frames are dropped (too-big) on
    /// the way out.
    #[arg(long, value_name = "BYTES", default_value_t = 65_535,
          value_parser = clap::value_parser!(u32).range(68..=65_535))]
    pub mtu: u32,
    /// The format of the output files.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = OutFormat::Pcap)]
    pub out_format: OutFormat,
    /// Print the final MAC table after the counters.
    #[arg(long)]
    pub fdb: bool,
    /// Print the summary as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// A static MAC table entry before the first frame, like `tapswitch fdb add MAC PORT`
    /// (repeatable; PORT is a --port name).
    #[arg(long = "static", value_name = "MAC=PORT")]
    pub static_entries: Vec<String>,
    /// A VXLAN tunnel port, numbered after the --port ports: NAME=FILE receives a capture of
    /// the underlay (VXLAN to the --underlay endpoint), NAME alone receives nothing; its output
    /// holds the underlay frames the switch sends (one per member for a flood).
    #[arg(long, value_name = "NAME[=FILE]", requires_all = ["underlay", "vni"])]
    pub vxlan: Option<String>,
    /// The tunnel's own endpoint on the underlay, IPv4 or IPv6 (port 4789 unless given; an IPv6
    /// address with a port in brackets, [2001:db8::1]:4789).
    #[arg(long, value_name = "IP[:PORT]", requires = "vxlan", value_parser = parse_peer)]
    pub underlay: Option<(IpAddr, Option<u16>)>,
    /// The network's VXLAN network identifier (0 to 16777215).
    #[arg(long, value_name = "N", requires = "vxlan",
          value_parser = clap::value_parser!(u32).range(0..=i64::from(vxlan::MAX_VNI)))]
    pub vni: Option<u32>,
    /// Another host of the network (repeatable; port 4789 unless given; of --underlay's IP
    /// version): floods go to it and its VXLAN is accepted.
    #[arg(long = "member", value_name = "IP[:PORT]", requires = "vxlan", value_parser = parse_peer)]
    pub members: Vec<(IpAddr, Option<u16>)>,
}

/// `--ageing-time`: whole seconds, with a message that says so for `-1`.
fn parse_seconds(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| {
        format!("{s:?} is not a number of seconds (0 or more; 0 keeps hosts for ever)")
    })
}

/// Where `replay` prints.
pub struct Streams {
    /// Trace lines and the summary.
    pub out: Box<dyn Write + Send>,
    /// Differences, warnings and the progress line.
    pub err: Box<dyn Write + Send>,
    /// Whether to show a progress line on `err` (it is a terminal).
    pub progress: bool,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

/// Runs `tapswitch replay` on the process's stdout and stderr.
pub fn run(args: ReplayArgs) -> Result<ExitCode> {
    run_to(
        args,
        Streams {
            out: Box::new(crate::pipe::stdout()),
            err: Box::new(io::stderr()),
            progress: io::stderr().is_terminal(),
        },
    )
}

type Shared = Arc<Mutex<Box<dyn Write + Send>>>;

/// Writes to a shared stream. A reader that went away (`| head`) is not an
/// error: the run goes on, and its outputs and exit code stay what they are.
fn print(stream: &Shared, text: &str) -> Result<()> {
    let mut stream = stream.lock().unwrap_or_else(PoisonError::into_inner);
    quiet_on_closed_pipe(stream.write_all(text.as_bytes()))
}

fn flush(stream: &Shared) -> Result<()> {
    quiet_on_closed_pipe(
        stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush(),
    )
}

fn quiet_on_closed_pipe(result: io::Result<()>) -> Result<()> {
    match result {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
}

/// Runs `tapswitch replay`, printing to `streams`.
pub fn run_to(args: ReplayArgs, streams: Streams) -> Result<ExitCode> {
    let out: Shared = Arc::new(Mutex::new(Box::new(io::BufWriter::with_capacity(
        64 * 1024,
        streams.out,
    ))));
    let err: Shared = Arc::new(Mutex::new(streams.err));
    let progress = streams
        .progress
        .then(|| progress_line(err.clone(), WallClock::now()));
    let result = replay(&args, &out, &err, progress);
    // What was printed before an error stays printed.
    flush(&out)?;
    flush(&err)?;
    result
}

fn replay(
    args: &ReplayArgs,
    out: &Shared,
    err: &Shared,
    progress: Option<Arc<ProgressSink>>,
) -> Result<ExitCode> {
    let config = config(args, if args.json { err } else { out }, progress.clone())?;
    let format = config.format;
    let names: Vec<&str> = config.ports.iter().map(|p| p.name.as_str()).collect();
    if let Some(expect) = &args.expect {
        refuse_same_dir(&args.out, expect)?;
    }
    let (dir, writers) = OutputDir::prepare(&args.out, &names, format.extension(), Policy::Exact)?;
    let outcome = playback::run(&config, writers)?;
    let written = dir.commit()?;
    if progress.is_some() {
        // Clear the progress line (nothing to clear if none was drawn).
        print(err, "\r\x1b[K")?;
    }
    for warning in &outcome.warnings {
        print(err, &format!("tapswitch: warning: {warning}\n"))?;
    }

    let report = match &args.expect {
        None => None,
        Some(expect_dir) => {
            let ports: Vec<(&str, &Path)> = names
                .iter()
                .zip(&written)
                .map(|(name, path)| (*name, path.as_path()))
                .collect();
            let differences = expect::compare_all(&ports, expect_dir)?;
            Some(ExpectReport {
                dir: expect_dir.display().to_string(),
                same: differences.is_empty(),
                differences,
            })
        }
    };
    if args.json {
        print(
            out,
            &summary::render_json(&outcome, args.fdb, report.as_ref())?,
        )?;
    } else {
        print(out, &summary::render(&outcome, &config, args.fdb))?;
    }
    let Some(report) = report else {
        return Ok(ExitCode::SUCCESS);
    };
    if report.same {
        if !args.json {
            print(
                out,
                &format!(
                    "expect: all {} match {}\n",
                    count(names.len() as u64, "output", "outputs"),
                    report.dir
                ),
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = String::new();
    for difference in &report.differences {
        text += &format!("expect: {difference}\n");
        if let Some(lines) = difference.frame_lines() {
            text += &lines;
            text.push('\n');
        }
    }
    print(err, &text)?;
    Ok(ExitCode::FAILURE)
}

/// A progress line on `err`, redrawn at most four times a second once the
/// run (which began at `started`) has taken [`PROGRESS_AFTER`].
fn progress_line(err: Shared, started: WallClock) -> Arc<ProgressSink> {
    let last = Mutex::new(None::<WallClock>);
    Arc::new(move |frames: u64, now: Instant| {
        let elapsed = started.elapsed();
        if elapsed < PROGRESS_AFTER {
            return;
        }
        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < Duration::from_millis(250)) {
            return;
        }
        *last = Some(WallClock::now());
        let rate = frames as f64 / elapsed.as_secs_f64();
        let _ = print(
            &err,
            &format!("\rreplay: {frames} frames, t={now}, {rate:.0} frames/s\x1b[K"),
        );
    })
}

/// The lab's configuration from the options; trace lines go to `trace_to`.
fn config(
    args: &ReplayArgs,
    trace_to: &Shared,
    progress: Option<Arc<ProgressSink>>,
) -> Result<LabConfig> {
    let mut ports: Vec<PortSpec> = Vec::new();
    let tunnel = args
        .vxlan
        .as_deref()
        .map(|spec| tunnel_spec(spec, args))
        .transpose()?;
    for spec in args.ports.iter().chain(&args.vxlan) {
        let port = parse_port(spec)?;
        if ports.iter().any(|p| p.name == port.name) {
            bail!(
                "port {} is given twice: port names must be unique",
                port.name
            );
        }
        ports.push(port);
    }
    let stdin_ports: Vec<&str> = ports
        .iter()
        .filter(|p| {
            p.input
                .as_ref()
                .is_some_and(|i| i.path.as_os_str() == STDIN_PATH)
        })
        .map(|p| p.name.as_str())
        .collect();
    if stdin_ports.len() > 1 {
        bail!(
            "ports {} all read stdin (-): only one port can",
            stdin_ports.join(", ")
        );
    }
    let gateway = if args.no_gateway {
        None
    } else {
        Some(match &args.gateway {
            Some(cidr) => parse_gateway(cidr)?,
            None => DEFAULT_GATEWAY,
        })
    };
    if gateway.is_some() && ports.iter().any(|p| p.name == GATEWAY_PORT_NAME) {
        bail!(
            "port name {GATEWAY_PORT_NAME} is the gateway's: choose another name, or add --no-gateway"
        );
    }
    let trace = args.trace.then(|| {
        let out = trace_to.clone();
        let sink: Arc<TraceSink> = Arc::new(move |line: &str| {
            let _ = print(&out, &format!("{line}\n"));
        });
        sink
    });
    let static_entries = args
        .static_entries
        .iter()
        .map(|spec| parse_static(spec, &ports))
        .collect::<Result<Vec<_>>>()?;
    Ok(LabConfig {
        tunnel,
        static_entries,
        ports,
        table: TableConfig {
            capacity: args.max_macs,
            ..TableConfig::default()
        }
        .with_ageing_secs(args.ageing_time),
        gateway,
        mtu: args.mtu as usize,
        format: args.out_format.into(),
        trace,
        progress,
    })
}

/// `NAME`, `NAME=FILE`, `NAME=FILE#N` or `NAME=FILE#IFNAME`; FILE `-` is stdin.
pub fn parse_port(spec: &str) -> Result<PortSpec> {
    let (name, file) = match spec.split_once('=') {
        Some((name, file)) => (name, Some(file)),
        None => (spec, None),
    };
    check_port_name(name)?;
    let input = match file {
        None => None,
        Some("") => bail!("--port {spec}: no file after '='"),
        Some(file) => Some(parse_input(file)),
    };
    Ok(PortSpec {
        name: name.to_string(),
        input,
    })
}

/// `FILE`, `FILE#N` or `FILE#IFNAME` (`pcap show` reads the same).
pub fn parse_input(file: &str) -> InputSpec {
    // A file whose name has a '#' in it is taken as it is.
    if Path::new(file).exists() {
        return InputSpec {
            path: file.into(),
            interface: None,
        };
    }
    match file.rsplit_once('#') {
        Some((path, choice)) if !choice.is_empty() && !path.is_empty() => InputSpec {
            path: path.into(),
            interface: Some(
                choice
                    .parse::<InterfaceChoice>()
                    .unwrap_or_else(|never| match never {}),
            ),
        },
        _ => InputSpec {
            path: file.into(),
            interface: None,
        },
    }
}

/// The tunnel of `--vxlan NAME[=FILE]` and its `--underlay`, `--vni` and
/// `--member`s (of the underlay's IP version: one socket reaches no other).
fn tunnel_spec(spec: &str, args: &ReplayArgs) -> Result<TunnelSpec> {
    let endpoint =
        |(ip, port): (IpAddr, Option<u16>)| SocketAddr::new(ip, port.unwrap_or(vxlan::IANA_PORT));
    let (Some(local), Some(vni)) = (args.underlay, args.vni) else {
        bail!("--vxlan {spec}: give the tunnel's --underlay IP[:PORT] and --vni N");
    };
    let local = endpoint(local);
    let mut members: Vec<SocketAddr> = Vec::new();
    for member in args.members.iter().copied().map(endpoint) {
        if member == local {
            bail!("--member {member} is the tunnel's own --underlay endpoint");
        }
        if member.is_ipv4() != local.is_ipv4() {
            bail!(
                "--member {member} is {}, and the tunnel's --underlay {local} is {}: one tunnel, one IP version",
                ip_version(member.ip()),
                ip_version(local.ip())
            );
        }
        if !members.contains(&member) {
            members.push(member);
        }
    }
    Ok(TunnelSpec {
        port: parse_port(spec)?.name,
        local,
        vni,
        members,
    })
}

fn ip_version(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// `MAC=PORT`, PORT one of the `--port` names.
fn parse_static(spec: &str, ports: &[PortSpec]) -> Result<(MacAddr, PortId)> {
    let Some((mac, port)) = spec.split_once('=') else {
        bail!("--static {spec}: expected MAC=PORT, such as 02:42:ac:11:00:02=p1");
    };
    let mac: MacAddr = mac
        .parse()
        .map_err(|err| anyhow!("--static {spec}: {err}"))?;
    let Some(index) = ports.iter().position(|p| p.name == port) else {
        bail!("--static {spec}: no port named {port}; name one given with --port");
    };
    Ok((mac, PortId(index as u32 + 1)))
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
        let p = parse_port("p1=-").unwrap();
        assert_eq!(p.input.unwrap().path, PathBuf::from("-"));
        for bad in ["", "../x=a.pcap", ".hidden", "a/b", "p1="] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn progress_shows_only_after_a_second() {
        let buf = Buf::default();
        let err: Shared = Arc::new(Mutex::new(Box::new(buf.clone())));
        let quick = progress_line(err.clone(), WallClock::now());
        quick(65_536, Instant::from_secs(1));
        assert!(
            buf.0.lock().unwrap().is_empty(),
            "a run under a second shows none"
        );
        let slow = progress_line(err, WallClock::now() - Duration::from_secs(2));
        slow(131_072, Instant::from_secs(2));
        slow(196_608, Instant::from_secs(3));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.starts_with("\rreplay: 131072 frames, t=2.000000, "),
            "{text:?}"
        );
        assert_eq!(
            text.matches('\r').count(),
            1,
            "redrawn at most 4 times a second"
        );
    }

    #[test]
    fn ageing_time_says_what_it_wants() {
        assert_eq!(parse_seconds("0"), Ok(0));
        let err = parse_seconds("-1").unwrap_err();
        assert!(
            err.starts_with("\"-1\" is not a number of seconds"),
            "{err}"
        );
    }

    #[test]
    fn static_specs_name_a_port_by_its_name() {
        let ports = [parse_port("a").unwrap(), parse_port("b").unwrap()];
        assert_eq!(
            parse_static("02:00:00:00:00:01=b", &ports).unwrap(),
            ("02:00:00:00:00:01".parse().unwrap(), PortId(2))
        );
        let err = parse_static("02:00:00:00:00:01=c", &ports).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--static 02:00:00:00:00:01=c: no port named c; name one given with --port"
        );
        assert!(parse_static("02:00:00:00:00:01", &ports).is_err());
        assert!(parse_static("zz=a", &ports).is_err());
    }
}
