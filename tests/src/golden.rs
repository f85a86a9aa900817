//! Golden scenarios of the frame lab: a directory with `input.txt` (the
//! frames, in the fixture language), `args` (the `tapswitch replay` options,
//! paths relative to the directory) and the generated, reviewed outputs in
//! `expected/` (see tests/fixtures/README.md). [`check_scenario`] checks that
//!
//! 1. `input.txt` builds (`tapswitch pcap build`) into the checked-in pcaps;
//! 2. `tapswitch replay` with the options in `args` writes, byte for byte,
//!    `expected/<port>.pcap`, and prints `expected/stdout.txt` (trace lines
//!    and summary);
//! 3. `expected/<port>.txt` is what `tapswitch pcap show` says of the output;
//! 4. a second run gives identical bytes, and `--expect expected` agrees.
//!
//! With `UPDATE_FIXTURES=1` it rewrites the generated files instead; review
//! the diff before committing it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ports::capture::OutputFormat;
use tools::lab::{expect, text};
use tools::pcap_cmd;

use crate::lab::{TempDir, fixtures_dir, replay, replay_args, updating_fixtures};

/// Collects every mismatch of a scenario, so one run shows them all.
struct Check {
    update: bool,
    problems: Vec<String>,
}

impl Check {
    /// `actual` must equal the file at `expected` (or replaces it when updating).
    fn bytes(&mut self, expected: &Path, actual: &[u8], describe: impl FnOnce() -> String) {
        if self.update {
            fs::create_dir_all(expected.parent().unwrap()).unwrap();
            if fs::read(expected).ok().as_deref() != Some(actual) {
                fs::write(expected, actual).unwrap();
            }
            return;
        }
        match fs::read(expected) {
            Err(_) => self.problems.push(format!(
                "{} is missing (UPDATE_FIXTURES=1 writes it)",
                expected.display()
            )),
            Ok(want) if want != actual => {
                self.problems
                    .push(format!("{} differs: {}", expected.display(), describe()))
            }
            Ok(_) => {}
        }
    }

    fn text(&mut self, expected: &Path, actual: &str) {
        let want = fs::read_to_string(expected).unwrap_or_default();
        self.bytes(expected, actual.as_bytes(), || {
            first_line_difference(&want, actual)
        });
    }
}

fn first_line_difference(want: &str, got: &str) -> String {
    let (mut w, mut g) = (want.lines(), got.lines());
    for n in 1.. {
        match (w.next(), g.next()) {
            (None, None) => return "only in line endings".into(),
            (a, b) if a != b => {
                return format!(
                    "line {n}:\n  expected: {}\n  got:      {}",
                    a.unwrap_or("(end)"),
                    b.unwrap_or("(end)")
                );
            }
            _ => {}
        }
    }
    unreachable!()
}

pub fn check_scenario(dir: &Path) {
    let name = &dir
        .strip_prefix(fixtures_dir())
        .unwrap_or(dir)
        .display()
        .to_string();
    let mut check = Check {
        update: updating_fixtures(),
        problems: Vec::new(),
    };
    let tmp = TempDir::new(&name.replace('/', "-"));

    // 1. The text builds into the checked-in input pcaps.
    let text = fs::read_to_string(dir.join("input.txt")).unwrap();
    let frames = text::parse(&text).unwrap_or_else(|e| panic!("{name}/input.txt: {e:#}"));
    let built = pcap_cmd::build(&frames, &tmp.join("in"), OutputFormat::Pcap).unwrap();
    for (path, _) in &built {
        let file = path.file_name().unwrap().to_str().unwrap();
        let bytes = fs::read(path).unwrap();
        check.bytes(&dir.join(file), &bytes, || {
            "rebuild it from input.txt (UPDATE_FIXTURES=1)".into()
        });
    }

    // 2. Replay with the scenario's options.
    let options = fs::read_to_string(dir.join("args")).unwrap();
    let mut args: Vec<String> = options.split_whitespace().map(String::from).collect();
    let mut ports = Vec::new();
    for i in 0..args.len() {
        if i > 0 && (args[i - 1] == "--port" || args[i - 1] == "--vxlan") {
            let (port, file) = match args[i].split_once('=') {
                Some((port, file)) => (port.to_string(), Some(dir.join(file))),
                None => (args[i].clone(), None),
            };
            if let Some(file) = file {
                args[i] = format!("{port}={}", file.display());
            }
            ports.push(port);
        }
    }
    let run = |out: &Path| -> (String, Vec<PathBuf>) {
        let mut args = args.clone();
        args.extend(["--out".to_string(), out.display().to_string()]);
        let (result, stdout) = replay(replay_args(&args));
        match result {
            Ok(code) => assert_eq!(code, ExitCode::SUCCESS, "{name}: {stdout}"),
            Err(err) => panic!("{name}: replay failed: {err:#}"),
        }
        let outputs = ports
            .iter()
            .map(|p| out.join(format!("{p}.pcap")))
            .collect();
        (stdout, outputs)
    };
    let (stdout, outputs) = run(&tmp.join("out"));
    check.text(&dir.join("expected/stdout.txt"), &stdout);
    for (port, output) in ports.iter().zip(&outputs) {
        let expected = dir.join(format!("expected/{port}.pcap"));
        let bytes = fs::read(output).unwrap();
        check.bytes(&expected, &bytes, || {
            match expect::compare_files(port, &expected, output) {
                Ok(Some(difference)) => difference.to_string(),
                Ok(None) => "same frames, different file bytes".into(),
                Err(err) => format!("{err:#}"),
            }
        });
        let shown = pcap_cmd::show(output, port).unwrap();
        check.text(&dir.join(format!("expected/{port}.txt")), &shown);
    }
    let stale: Vec<String> = fs::read_dir(dir.join("expected"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|f| {
                    f != "stdout.txt"
                        && !ports
                            .iter()
                            .any(|p| *f == format!("{p}.pcap") || *f == format!("{p}.txt"))
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        stale.is_empty(),
        "{name}: stale files in expected/: {stale:?}"
    );

    // 3. Deterministic: the same inputs give the same bytes again.
    let (again, outputs_again) = run(&tmp.join("again"));
    assert_eq!(stdout, again, "{name}: stdout changed between runs");
    for (a, b) in outputs.iter().zip(&outputs_again) {
        assert_eq!(
            fs::read(a).unwrap(),
            fs::read(b).unwrap(),
            "{name}: {} changed between runs",
            a.display()
        );
    }

    // 4. --expect agrees with the checked-in outputs.
    if !check.update {
        let mut args = args.clone();
        args.extend([
            "--out".to_string(),
            tmp.join("expect").display().to_string(),
            "--expect".to_string(),
            dir.join("expected").display().to_string(),
        ]);
        let (result, stdout) = replay(replay_args(&args));
        if result.ok() != Some(ExitCode::SUCCESS) {
            check.problems.push(format!(
                "--expect failed: {}",
                stdout.lines().last().unwrap_or("")
            ));
        }
    }
    assert!(
        check.problems.is_empty(),
        "{name}:\n{}",
        check.problems.join("\n")
    );
}
