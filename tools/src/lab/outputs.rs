//! Where the lab's outputs go: the format chosen on the command line, and a
//! directory whose files appear all at once or not at all.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use ports::capture::OutputFormat;

/// `replay --out-format` and `pcap build --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutFormat {
    /// Classic pcap, nanosecond timestamps (times up to 2106).
    Pcap,
    /// pcapng, nanosecond timestamps (any time).
    Pcapng,
}

impl From<OutFormat> for OutputFormat {
    fn from(f: OutFormat) -> Self {
        match f {
            OutFormat::Pcap => OutputFormat::Pcap,
            OutFormat::Pcapng => OutputFormat::PcapNg,
        }
    }
}

/// What may already be in an output directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// After the run the directory holds exactly this run's files (and the
    /// manifest): outputs an earlier run listed in [`MANIFEST`] are removed,
    /// and anything else there refuses the run before it starts (`replay`,
    /// so that a stale output is never taken for a fresh one).
    Exact,
    /// Files of the same names are replaced; anything else stays
    /// (`pcap build` and `generate`, whose outputs sit beside their sources).
    Add,
}

/// The file, in an output directory, that lists the outputs `replay` wrote
/// there, one name a line: what a later run may remove as its own.
pub const MANIFEST: &str = ".tapswitch-outputs";

/// The output directory: files are written under hidden temporary names
/// and renamed into place only when the whole run succeeded. Dropped
/// before that, it removes them (and the directory, if it made it).
#[derive(Debug)]
pub struct OutputDir {
    dir: PathBuf,
    created: bool,
    files: Vec<(PathBuf, PathBuf)>,
    /// Outputs of an earlier run that this run does not write (`Exact`).
    stale: Vec<PathBuf>,
    policy: Policy,
    committed: bool,
}

impl OutputDir {
    /// Creates `dir` if needed and a temporary file for each name; returns
    /// the writers in the same order. With [`Policy::Exact`], refuses a
    /// directory that holds anything but earlier outputs.
    pub fn prepare(
        dir: &Path,
        names: &[&str],
        extension: &str,
        policy: Policy,
    ) -> Result<(OutputDir, Vec<Box<dyn Write>>)> {
        let created = !dir.exists();
        let targets: Vec<String> = names.iter().map(|n| format!("{n}.{extension}")).collect();
        let mut stale = Vec::new();
        if created {
            fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the output directory {}", dir.display()))?;
        } else if !dir.is_dir() {
            bail!("{} is not a directory", dir.display());
        } else if policy == Policy::Exact {
            stale = earlier_outputs(dir, &targets)?;
        }
        let mut guard = OutputDir {
            dir: dir.to_path_buf(),
            created,
            files: Vec::new(),
            stale,
            policy,
            committed: false,
        };
        let mut writers: Vec<Box<dyn Write>> = Vec::new();
        for target in &targets {
            let temp = dir.join(format!(".{target}.tmp{}", std::process::id()));
            let file =
                File::create(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
            guard.files.push((temp, dir.join(target)));
            writers.push(Box::new(file));
        }
        Ok((guard, writers))
    }

    /// Renames every file into place (and, with [`Policy::Exact`], removes
    /// the earlier outputs this run did not write); returns the final paths.
    pub fn commit(mut self) -> Result<Vec<PathBuf>> {
        for (temp, target) in &self.files {
            fs::rename(temp, target).with_context(|| {
                format!("cannot rename {} to {}", temp.display(), target.display())
            })?;
        }
        self.committed = true;
        let written: Vec<PathBuf> = self
            .files
            .iter()
            .map(|(_, target)| target.clone())
            .collect();
        if self.policy == Policy::Exact {
            // The manifest lists the stale files until they are gone, so a
            // run cut short here still knows them as its own next time.
            let mut listed = written.clone();
            listed.extend(self.stale.iter().cloned());
            self.write_manifest(&listed)?;
            for path in &self.stale {
                fs::remove_file(path)
                    .or_else(|err| match err.kind() {
                        std::io::ErrorKind::NotFound => Ok(()),
                        _ => Err(err),
                    })
                    .with_context(|| {
                        format!("cannot remove the earlier output {}", path.display())
                    })?;
            }
            self.write_manifest(&written)?;
        }
        Ok(written)
    }

    fn write_manifest(&self, files: &[PathBuf]) -> Result<()> {
        let mut text =
            String::from("# written by tapswitch replay: its outputs in this directory\n");
        for path in files {
            if let Some(name) = path.file_name() {
                text += &name.to_string_lossy();
                text.push('\n');
            }
        }
        let manifest = self.dir.join(MANIFEST);
        let temp = self
            .dir
            .join(format!("{MANIFEST}.tmp{}", std::process::id()));
        fs::write(&temp, text)
            .and_then(|()| fs::rename(&temp, &manifest))
            .with_context(|| format!("cannot write {}", manifest.display()))
    }
}

/// The files in `dir` an earlier run wrote that this run (writing `targets`)
/// does not replace. Anything else in `dir` but `targets`, the manifest and
/// temporary files of ours is refused: it is not ours to remove, and left
/// there it would pass for an output of this run.
fn earlier_outputs(dir: &Path, targets: &[String]) -> Result<Vec<PathBuf>> {
    let manifest = match fs::read_to_string(dir.join(MANIFEST)) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => {
            return Err(err)
                .with_context(|| format!("cannot read {}", dir.join(MANIFEST).display()));
        }
    };
    let listed: Vec<&str> = manifest
        .lines()
        .filter(|l| !l.starts_with('#') && is_output_name(l))
        .collect();
    let mut stale = Vec::new();
    let mut foreign = Vec::new();
    let entries = fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if name == MANIFEST || (targets.contains(&name) && is_file) || is_temporary(&name) {
            continue;
        }
        if is_file && listed.contains(&name.as_str()) {
            stale.push(entry.path());
        } else {
            foreign.push(name);
        }
    }
    if !foreign.is_empty() {
        foreign.sort();
        let shown: Vec<String> = foreign.iter().take(3).map(|n| format!("{n:?}")).collect();
        let more = match foreign.len() {
            n if n > 3 => format!(" and {} more", n - 3),
            _ => String::new(),
        };
        bail!(
            "--out {} holds {}{more}, which no earlier replay wrote there: remove it, or choose \
             another directory (after a replay, --out holds exactly its outputs)",
            dir.display(),
            shown.join(", ")
        );
    }
    stale.sort();
    Ok(stale)
}

/// `NAME.pcap` or `NAME.pcapng`, NAME a port name.
fn is_output_name(name: &str) -> bool {
    let stem = name
        .strip_suffix(".pcap")
        .or_else(|| name.strip_suffix(".pcapng"));
    stem.is_some_and(|stem| super::notation::check_port_name(stem).is_ok())
}

/// `.NAME.EXT.tmpPID` or the manifest's `.tapswitch-outputs.tmpPID`: a
/// file of a run still going or one that was killed.
fn is_temporary(name: &str) -> bool {
    let Some((base, pid)) = name.rsplit_once(".tmp") else {
        return false;
    };
    let ours = base == MANIFEST || base.strip_prefix('.').is_some_and(is_output_name);
    ours && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for (temp, _) in &self.files {
            let _ = fs::remove_file(temp);
        }
        if self.created {
            // Only if empty: never remove what someone else put there.
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tapswitch-outputs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn files_appear_on_commit_with_their_final_names() {
        let dir = temp_dir("commit");
        let (out, mut writers) =
            OutputDir::prepare(&dir, &["p1", "p2"], "pcap", Policy::Add).unwrap();
        writers[0].write_all(b"one").unwrap();
        drop(writers);
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            2,
            "two temporary files"
        );
        assert!(!dir.join("p1.pcap").exists(), "not before the commit");
        let paths = out.commit().unwrap();
        assert_eq!(paths, vec![dir.join("p1.pcap"), dir.join("p2.pcap")]);
        assert_eq!(fs::read(&paths[0]).unwrap(), b"one");
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            2,
            "no temporary file left"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_run_that_fails_leaves_nothing_behind() {
        let dir = temp_dir("abandon");
        let (out, writers) =
            OutputDir::prepare(&dir.join("new"), &["p1"], "pcap", Policy::Add).unwrap();
        drop(writers);
        drop(out);
        assert!(!dir.join("new").exists(), "the directory it made is gone");

        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("keep"), b"x").unwrap();
        let (out, writers) = OutputDir::prepare(&dir, &["p1"], "pcap", Policy::Add).unwrap();
        drop(writers);
        drop(out);
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec!["keep"],
            "someone else's file stays, the temporary one goes"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn run(dir: &Path, ports: &[&str]) -> Result<Vec<PathBuf>> {
        let (out, writers) = OutputDir::prepare(dir, ports, "pcap", Policy::Exact)?;
        drop(writers);
        out.commit()
    }

    #[test]
    fn exact_removes_the_outputs_of_an_earlier_larger_run() {
        let dir = temp_dir("exact");
        run(&dir, &["p1", "p2", "p3"]).unwrap();
        assert_eq!(names(&dir), [MANIFEST, "p1.pcap", "p2.pcap", "p3.pcap"]);
        run(&dir, &["p1"]).unwrap();
        assert_eq!(names(&dir), [MANIFEST, "p1.pcap"]);
        let manifest = fs::read_to_string(dir.join(MANIFEST)).unwrap();
        assert_eq!(
            manifest
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            ["p1.pcap"]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exact_refuses_what_it_did_not_write_and_changes_nothing() {
        let dir = temp_dir("foreign");
        run(&dir, &["p1", "p2"]).unwrap();
        // Not in the manifest: a file of the same pattern, someone's notes,
        // a directory.
        fs::write(dir.join("p9.pcap"), b"mine").unwrap();
        fs::write(dir.join("notes.txt"), b"keep").unwrap();
        fs::create_dir(dir.join("sub")).unwrap();
        let before = names(&dir);
        let err = format!("{:#}", run(&dir, &["p1"]).unwrap_err());
        assert!(
            err.contains(
                "holds \"notes.txt\", \"p9.pcap\", \"sub\", which no earlier replay wrote there"
            ),
            "{err}"
        );
        assert_eq!(names(&dir), before, "nothing removed, nothing left behind");
        // The same names as this run's outputs are replaced, as before.
        fs::remove_file(dir.join("notes.txt")).unwrap();
        fs::remove_file(dir.join("p9.pcap")).unwrap();
        fs::remove_dir(dir.join("sub")).unwrap();
        fs::write(
            dir.join("p3.pcap"),
            b"old, unlisted, but this run writes p3",
        )
        .unwrap();
        run(&dir, &["p3"]).unwrap();
        assert_eq!(names(&dir), [MANIFEST, "p3.pcap"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporary_names_are_recognised_strictly() {
        assert!(is_temporary(".p1.pcap.tmp123"));
        assert!(is_temporary(".tapswitch-outputs.tmp9"));
        for not in [
            ".p1.pcap.tmp",
            "p1.pcap.tmp1",
            ".notes.txt.tmp1",
            ".p1.pcap.tmp1x",
        ] {
            assert!(!is_temporary(not), "{not}");
        }
        assert!(is_output_name("p1.pcapng") && !is_output_name("../p1.pcap"));
    }
}
