//! `tapswitch completions bash|zsh|fish` and `tapswitch man`: shell
//! completion scripts and manual pages, generated from the command line's
//! own definition so they never fall behind it. Install lines are in
//! docs/switch-and-ports.md ("Shell completions and manual pages").

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use clap_complete::Shell;

use crate::outln;

/// Options of `tapswitch completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// The shells completions are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl From<CompletionShell> for Shell {
    fn from(shell: CompletionShell) -> Shell {
        match shell {
            CompletionShell::Bash => Shell::Bash,
            CompletionShell::Zsh => Shell::Zsh,
            CompletionShell::Fish => Shell::Fish,
        }
    }
}

/// Options of `tapswitch man`.
#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Write tapswitch.1 and a page per subcommand (tapswitch-fdb.1, ...) into DIR
    /// instead of printing tapswitch.1 to stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// The completion script for `args.shell`.
pub fn completion_script(args: &CompletionsArgs, mut cmd: clap::Command) -> Vec<u8> {
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(Shell::from(args.shell), &mut cmd, name, &mut script);
    script
}

/// Prints the completion script; a closed pipe (`| head`) ends it quietly.
pub fn completions(args: &CompletionsArgs, cmd: clap::Command) -> Result<ExitCode> {
    let script = completion_script(args, cmd);
    let mut stdout = crate::pipe::stdout();
    stdout
        .write_all(&script)
        .and_then(|()| stdout.flush())
        .context("writing the completion script")?;
    Ok(ExitCode::SUCCESS)
}

/// Prints tapswitch.1, or writes every page into `--out DIR`.
pub fn man(args: &ManArgs, cmd: clap::Command) -> Result<ExitCode> {
    match &args.out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .context("rendering the manual page")?;
            let mut stdout = crate::pipe::stdout();
            stdout
                .write_all(&page)
                .and_then(|()| stdout.flush())
                .context("writing the manual page")?;
        }
        Some(dir) => {
            let written = write_pages(cmd, dir)?;
            outln!("wrote {written} manual pages to {}", dir.display())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes tapswitch.1 and one page per subcommand into `dir` (created if
/// missing); returns how many.
pub fn write_pages(cmd: clap::Command, dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pages = count_pages(&cmd);
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("writing manual pages into {}", dir.display()))?;
    Ok(pages)
}

/// One page for the command and one for each visible subcommand, at every level.
fn count_pages(cmd: &clap::Command) -> usize {
    1 + cmd
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .map(count_pages)
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};

    #[derive(Debug, Parser)]
    #[command(name = "tapswitch")]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Debug, Subcommand)]
    enum Sub {
        /// Show the table.
        Fdb {
            #[command(subcommand)]
            command: Option<FdbSub>,
        },
    }

    #[derive(Debug, Subcommand)]
    enum FdbSub {
        /// Add an entry.
        Add,
    }

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let script = completion_script(&CompletionsArgs { shell }, Cli::command());
            let text = String::from_utf8(script).unwrap();
            assert!(text.contains("fdb") && text.contains("add"), "{shell:?}");
        }
    }

    #[test]
    fn a_page_per_command_and_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(write_pages(Cli::command(), dir.path()).unwrap(), 3);
        for page in ["tapswitch.1", "tapswitch-fdb.1", "tapswitch-fdb-add.1"] {
            let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
            assert!(text.starts_with(".ie"), "{page} is roff");
        }
    }
}
