//! `tapswitch pcap`: make and read capture files for the lab.
//!
//! - `build FILE.txt --out DIR`: the text format of [`crate::lab::text`]
//!   into one pcap per port named in it (`-` reads stdin);
//! - `show FILE...`: capture files back into that text (for diffs and for
//!   reviewing expected outputs), frame by frame as they are read (`-` reads
//!   stdin; `FILE#N` or `FILE#IFNAME` picks an interface of a pcapng file);
//! - `generate --frames N --ports P --out DIR`: a synthetic capture for
//!   benchmarks (see [`generate`]).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use ports::capture::{Encoder, OutputFormat, PcapReader};

use crate::lab::notation::{count, hex, seconds_ns};
use crate::lab::outputs::{OutFormat, OutputDir, Policy};
use crate::lab::playback::{InputSpec, STDIN_PATH, display_input};
use crate::lab::replay::parse_input;
use crate::lab::text;
use crate::outln;

#[derive(Debug, Subcommand)]
pub enum PcapCommand {
    /// Turn a text file of frames into one capture file per port (DIR/PORT.pcap).
    Build {
        /// The text file (one frame per line: t=SECONDS PORT SRC > DST ...); - reads stdin.
        file: PathBuf,
        /// Where to write the capture files (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The format of the files.
        #[arg(long, value_enum, value_name = "FORMAT", default_value_t = OutFormat::Pcap)]
        format: OutFormat,
    },
    /// Print the frames of capture files as text lines (the format `build` reads).
    Show {
        /// pcap or pcapng files; - reads stdin; FILE#N or FILE#IFNAME picks one interface of a
        /// pcapng file with several.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
        /// The port name to print (default: each file's name without extension).
        #[arg(long, value_name = "NAME")]
        port: Option<String>,
        /// One JSON object per frame and line (JSON Lines, so `| head` still
        /// stops the reading): file, port, time, length, the text line's
        /// body and the bytes in hex.
        #[arg(long)]
        json: bool,
    },
    /// Write a synthetic capture for benchmarks: learning, unicast and flooding over
    /// several ports, 64-byte frames one microsecond apart (DIR/p1.pcap ...).
    Generate {
        /// How many frames in all.
        #[arg(long, value_name = "N", default_value_t = 1_000_000)]
        frames: usize,
        /// How many ports (files).
        #[arg(long, value_name = "N", default_value_t = 8)]
        ports: usize,
        /// Where to write the files (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Seed of the pseudo-random mix (the same seed gives the same files).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

pub fn run(cmd: PcapCommand) -> Result<ExitCode> {
    match cmd {
        PcapCommand::Build { file, out, format } => {
            let name = display_input(&file);
            let text = read_text(&file).with_context(|| format!("cannot read {name}"))?;
            let frames = text::parse(&text).with_context(|| name.clone())?;
            if frames.is_empty() {
                bail!("{name} has no frames (only comments and blank lines): nothing to build");
            }
            let built = build(&frames, &out, format.into()).with_context(|| name.clone())?;
            let mut stdout = crate::pipe::stdout();
            for (path, n) in built {
                writeln!(
                    stdout,
                    "wrote {} ({})",
                    path.display(),
                    count(n as u64, "frame", "frames")
                )?;
            }
        }
        PcapCommand::Show { files, port, json } => {
            let mut out = io::BufWriter::new(crate::pipe::stdout());
            for file in &files {
                let input = parse_input(file);
                let name = match &port {
                    Some(name) => name.clone(),
                    None => port_name_of(&input.path),
                };
                let style = if json {
                    ShowStyle::Json
                } else {
                    ShowStyle::Text
                };
                show_to(&input, &name, style, &mut out)?;
            }
            out.flush()?;
        }
        PcapCommand::Generate {
            frames,
            ports,
            out,
            seed,
        } => {
            let files = generate(frames, ports, seed)?;
            let names: Vec<String> = (1..=ports).map(|p| format!("p{p}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let (dir, mut writers) = OutputDir::prepare(&out, &names, "pcap", Policy::Add)?;
            for (writer, bytes) in writers.iter_mut().zip(&files) {
                writer.write_all(bytes)?;
            }
            drop(writers);
            for path in dir.commit()? {
                outln!("wrote {}", path.display())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes one file per port of `frames` into `dir`, in the order the ports
/// first appear; frames keep their line order. Returns the paths and counts.
pub fn build(
    frames: &[text::TextFrame],
    dir: &Path,
    format: OutputFormat,
) -> Result<Vec<(PathBuf, usize)>> {
    let encoder = Encoder::new(format);
    let mut order: Vec<&str> = Vec::new();
    let mut files: BTreeMap<&str, (Vec<u8>, usize)> = BTreeMap::new();
    for frame in frames {
        let (bytes, count) = files.entry(&frame.port).or_insert_with(|| {
            order.push(&frame.port);
            let mut header = Vec::new();
            encoder.header(&mut header, &frame.port);
            (header, 0)
        });
        if !encoder.fits(frame.time_ns) {
            bail!(
                "line {}: time {} is after 2106-02-07 06:28:15 UTC, which a classic pcap cannot \
                 hold: add --format pcapng",
                frame.line,
                seconds_ns(frame.time_ns)
            );
        }
        encoder
            .frame(bytes, frame.time_ns, &frame.data, None)
            .with_context(|| format!("line {}", frame.line))?;
        *count += 1;
    }
    let (out, mut writers) = OutputDir::prepare(dir, &order, format.extension(), Policy::Add)?;
    for (writer, port) in writers.iter_mut().zip(&order) {
        writer.write_all(&files[port].0)?;
    }
    drop(writers);
    let paths = out.commit()?;
    Ok(paths
        .into_iter()
        .zip(&order)
        .map(|(path, port)| (path, files[port].1))
        .collect())
}

/// Every frame of a capture file as text lines, with `port` as the port.
pub fn show(file: &Path, port: &str) -> Result<String> {
    let input = InputSpec {
        path: file.to_path_buf(),
        interface: None,
    };
    let mut out = Vec::new();
    show_to(&input, port, ShowStyle::Text, &mut out)?;
    Ok(String::from_utf8(out).expect("text lines are UTF-8"))
}

/// How `pcap show` prints a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowStyle {
    /// The text line `pcap build` reads back.
    Text,
    /// One JSON object per line (`--json`).
    Json,
}

/// Writes every frame of a capture as a line to `out` as it is read, so a
/// reader that stops early (`| head`) stops the reading too.
pub fn show_to(input: &InputSpec, port: &str, style: ShowStyle, out: &mut dyn Write) -> Result<()> {
    let name = display_input(&input.path);
    let source: Box<dyn Read> = if input.path.as_os_str() == STDIN_PATH {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(&input.path).with_context(|| format!("cannot open {name}"))?)
    };
    let mut reader = PcapReader::with_interface(BufReader::new(source), input.interface.clone())
        .with_context(|| name.clone())?;
    while let Some(frame) = reader.next_frame().with_context(|| name.clone())? {
        let mut line = text::show(frame.timestamp_ns, port, frame.data);
        if style == ShowStyle::Json {
            line = json_line(&name, port, &frame, &line);
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// One frame of `pcap show --json`. `text` is the frame as the text line
/// `pcap build` reads, without its `t=` time and port.
fn json_line(file: &str, port: &str, frame: &ports::capture::Frame<'_>, line: &str) -> String {
    let body = line.splitn(3, ' ').nth(2).unwrap_or_default();
    serde_json::json!({
        "file": file,
        "port": port,
        "time": text::time(frame.timestamp_ns),
        "time_ns": frame.timestamp_ns,
        "len": frame.data.len(),
        "original_len": frame.original_len,
        "text": body,
        "hex": hex(frame.data),
    })
    .to_string()
}

/// A text file, or stdin for `-`.
fn read_text(file: &Path) -> io::Result<String> {
    if file.as_os_str() == STDIN_PATH {
        let mut text = String::new();
        io::stdin().read_to_string(&mut text)?;
        return Ok(text);
    }
    fs::read_to_string(file)
}

fn port_name_of(file: &Path) -> String {
    if file.as_os_str() == STDIN_PATH {
        return "stdin".to_string();
    }
    file.file_stem()
        .map_or_else(|| "p".to_string(), |s| s.to_string_lossy().into_owned())
}

/// Hosts behind each port in a generated capture.
const HOSTS_PER_PORT: u64 = 32;

/// The kinds of address in a generated capture, in their second byte.
const KNOWN_HOST: u8 = 0x00;
const NEW_HOST: u8 = 0x01;
const UNKNOWN_HOST: u8 = 0x02;

/// The first frame's time: 2023-11-14 22:13:20 UTC, a round number.
const GENERATED_START_NS: u64 = 1_700_000_000 * 1_000_000_000;

/// A synthetic capture, one classic pcap (bytes) per port: `frames` frames
/// of 64 bytes, one microsecond apart, each from a random port. Per frame:
/// 85% unicast to a host behind another port (flooded until learned), 10%
/// broadcast, 4% unicast to an unknown address (flooded), 1% from a new
/// address (learning; after ~8000 of them the table is full and evicts).
pub fn generate(frames: usize, ports: usize, seed: u64) -> Result<Vec<Vec<u8>>> {
    if !(2..=255).contains(&ports) {
        bail!("--ports {ports}: choose 2 to 255 ports");
    }
    let encoder = Encoder::new(OutputFormat::Pcap);
    let mut files: Vec<Vec<u8>> = (1..=ports)
        .map(|p| {
            let mut header = Vec::with_capacity(frames / ports * 80 + 1024);
            encoder.header(&mut header, &format!("p{p}"));
            header
        })
        .collect();
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let host = |port: u64, n: u64| generated_mac(KNOWN_HOST, port << 16 | n);
    let ports = ports as u64;
    let mut fresh = 0u64;
    let mut frame = [0u8; 64];
    frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    for i in 0..frames as u64 {
        let port = next() % ports;
        let mut src = host(port + 1, next() % HOSTS_PER_PORT);
        let roll = next() % 100;
        let dst = match roll {
            0 => {
                fresh += 1;
                src = generated_mac(NEW_HOST, fresh);
                host((port + 1) % ports + 1, next() % HOSTS_PER_PORT)
            }
            1..=10 => [0xff; 6],
            11..=14 => generated_mac(UNKNOWN_HOST, next()),
            _ => {
                let other = (port + 1 + next() % (ports - 1)) % ports;
                host(other + 1, next() % HOSTS_PER_PORT)
            }
        };
        frame[0..6].copy_from_slice(&dst);
        frame[6..12].copy_from_slice(&src);
        frame[14..22].copy_from_slice(&i.to_be_bytes());
        encoder
            .frame(
                &mut files[port as usize],
                GENERATED_START_NS + i * 1_000,
                &frame,
                None,
            )
            .expect("2023 fits a classic pcap");
    }
    Ok(files)
}

/// A locally administered address: 02, the kind, then the low 32 bits of `n`.
fn generated_mac(kind: u8, n: u64) -> [u8; 6] {
    let [a, b, c, d] = (n as u32).to_be_bytes();
    [0x02, kind, a, b, c, d]
}
