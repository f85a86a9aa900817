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

/// The output directory: files are written under hidden temporary names
/// and renamed into place only when the whole run succeeded. Dropped
/// before that, it removes them (and the directory, if it made it).
#[derive(Debug)]
pub struct OutputDir {
    dir: PathBuf,
    created: bool,
    files: Vec<(PathBuf, PathBuf)>,
    committed: bool,
}

impl OutputDir {
    /// Creates `dir` if needed and a temporary file for each name; returns
    /// the writers in the same order.
    pub fn prepare(
        dir: &Path,
        names: &[&str],
        extension: &str,
    ) -> Result<(OutputDir, Vec<Box<dyn Write>>)> {
        let created = !dir.exists();
        if created {
            fs::create_dir_all(dir)
                .with_context(|| format!("Cannot create the output directory {}", dir.display()))?;
        } else if !dir.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        let mut guard = OutputDir {
            dir: dir.to_path_buf(),
            created,
            files: Vec::new(),
            committed: false,
        };
        let mut writers: Vec<Box<dyn Write>> = Vec::new();
        for name in names {
            let target = dir.join(format!("{name}.{extension}"));
            let temp = dir.join(format!(".{name}.{extension}.tmp{}", std::process::id()));
            let file =
                File::create(&temp).with_context(|| format!("Cannot create {}", temp.display()))?;
            guard.files.push((temp, target));
            writers.push(Box::new(file));
        }
        Ok((guard, writers))
    }

    /// Renames every file into place; returns the final paths.
    pub fn commit(mut self) -> Result<Vec<PathBuf>> {
        for (temp, target) in &self.files {
            fs::rename(temp, target).with_context(|| {
                format!("Cannot rename {} to {}", temp.display(), target.display())
            })?;
        }
        self.committed = true;
        Ok(self
            .files
            .iter()
            .map(|(_, target)| target.clone())
            .collect())
    }
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
        let (out, mut writers) = OutputDir::prepare(&dir, &["p1", "p2"], "pcap").unwrap();
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
        let (out, writers) = OutputDir::prepare(&dir.join("new"), &["p1"], "pcap").unwrap();
        drop(writers);
        drop(out);
        assert!(!dir.join("new").exists(), "the directory it made is gone");

        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("keep"), b"x").unwrap();
        let (out, writers) = OutputDir::prepare(&dir, &["p1"], "pcap").unwrap();
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
}
