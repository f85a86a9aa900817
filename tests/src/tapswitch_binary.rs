//! The `tapswitch` binary the kernel tests run, built from the sources of
//! this checkout.
//!
//! Cargo builds a package's own binaries before its integration tests, but
//! `tapswitch` belongs to `tools`, and stable Cargo cannot make one package
//! depend on another's binary (artifact dependencies are unstable). So
//! `cargo test -p tapswitch-tests` alone would run whatever `tapswitch` an
//! earlier build left in `target/`. Instead, the first test of each test
//! process that asks for the binary runs `cargo build -p tools --bin
//! tapswitch` for the same target directory and profile: when nothing
//! changed, that is Cargo's own freshness check and nothing more.
//! `TAPSWITCH_BIN` (at build time) names a binary to use as it is.
//!
//! The benchmark's floor for TAP ports, the example `tap_floor` of `tools`,
//! is built the same way for its own test ([`tap_floor`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `tapswitch` binary of this checkout, built if it is stale.
pub fn binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| match option_env!("TAPSWITCH_BIN") {
            Some(path) => PathBuf::from(path),
            None => build(&Layout::of_test_binary(), Artifact::Tapswitch),
        })
        .clone()
}

/// The example `tap_floor` of this checkout (`tools/examples/tap_floor.rs`),
/// built if it is stale.
pub fn tap_floor() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| build(&Layout::of_test_binary(), Artifact::TapFloor))
        .clone()
}

/// What a test asks Cargo to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Artifact {
    Tapswitch,
    TapFloor,
}

impl Artifact {
    /// `cargo build`'s arguments that name it.
    fn cargo_args(self) -> [&'static str; 4] {
        match self {
            Artifact::Tapswitch => ["-p", "tools", "--bin", "tapswitch"],
            Artifact::TapFloor => ["-p", "tools", "--example", "tap_floor"],
        }
    }

    /// Where Cargo puts it, under the profile's directory.
    fn path_in_profile(self) -> &'static str {
        match self {
            Artifact::Tapswitch => "tapswitch",
            Artifact::TapFloor => "examples/tap_floor",
        }
    }
}

/// Where this test binary was built: `TARGET/PROFILE_DIR/deps/TEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    target_dir: PathBuf,
    profile_dir: String,
}

impl Layout {
    fn of_test_binary() -> Layout {
        let exe = std::env::current_exe().expect("the test binary's path");
        Layout::of(&exe).unwrap_or_else(|| {
            panic!(
                "{} is not in TARGET/PROFILE/deps/: set TAPSWITCH_BIN",
                exe.display()
            )
        })
    }

    fn of(test_exe: &Path) -> Option<Layout> {
        let profile = test_exe.parent()?.parent()?;
        Some(Layout {
            target_dir: profile.parent()?.to_path_buf(),
            profile_dir: profile.file_name()?.to_str()?.to_string(),
        })
    }

    /// Cargo calls the `dev` profile's directory `debug`.
    fn profile(&self) -> &str {
        match self.profile_dir.as_str() {
            "debug" => "dev",
            other => other,
        }
    }

    fn path_of(&self, artifact: Artifact) -> PathBuf {
        self.target_dir
            .join(&self.profile_dir)
            .join(artifact.path_in_profile())
    }

    /// `cargo build` for `artifact`, in this layout.
    fn build_command(&self, artifact: Artifact) -> Command {
        let cargo = std::env::var_os("CARGO")
            .or_else(|| option_env!("CARGO").map(Into::into))
            .unwrap_or_else(|| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ is in the workspace");
        let mut command = Command::new(cargo);
        command
            .arg("build")
            .arg("--manifest-path")
            .arg(workspace.join("Cargo.toml"))
            .args(artifact.cargo_args())
            .arg("--profile")
            .arg(self.profile())
            .arg("--target-dir")
            .arg(&self.target_dir);
        command
    }
}

fn build(layout: &Layout, artifact: Artifact) -> PathBuf {
    let what = artifact.cargo_args().join(" ");
    let out = layout
        .build_command(artifact)
        .output()
        .unwrap_or_else(|e| panic!("running cargo build {what}: {e}"));
    assert!(
        out.status.success(),
        "cargo build {what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = layout.path_of(artifact);
    assert!(
        path.exists(),
        "{} is missing after cargo build",
        path.display()
    );
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_follows_the_test_binary() {
        let layout = Layout::of(Path::new("/w/target/debug/deps/lanes-0123abcd")).unwrap();
        assert_eq!(layout.target_dir, Path::new("/w/target"));
        assert_eq!(layout.profile(), "dev");
        assert_eq!(
            layout.path_of(Artifact::Tapswitch),
            Path::new("/w/target/debug/tapswitch")
        );
        let release = Layout::of(Path::new("/w/target/release/deps/lanes-0123abcd")).unwrap();
        assert_eq!(release.profile(), "release");
        assert_eq!(
            release.path_of(Artifact::Tapswitch),
            Path::new("/w/target/release/tapswitch")
        );
        assert_eq!(
            release.path_of(Artifact::TapFloor),
            Path::new("/w/target/release/examples/tap_floor")
        );
    }

    /// The newest modification time of the files under `dir`.
    fn newest_under(dir: &Path) -> std::time::SystemTime {
        let mut newest = std::time::SystemTime::UNIX_EPOCH;
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            let time = if meta.is_dir() {
                newest_under(&entry.path())
            } else {
                meta.modified().unwrap()
            };
            newest = newest.max(time);
        }
        newest
    }

    #[test]
    fn the_binary_is_built_from_the_current_sources() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let built = std::fs::metadata(binary()).unwrap().modified().unwrap();
        for crate_dir in ["tools", "switch", "ports", "ipam"] {
            let sources = newest_under(&workspace.join(crate_dir).join("src"));
            assert!(
                built >= sources,
                "the tapswitch binary is older than {crate_dir}/src"
            );
        }
    }

    #[test]
    fn the_build_names_the_package_binary_profile_and_target_dir() {
        let layout = Layout::of(Path::new("/w/target/release/deps/t")).unwrap();
        let args = |artifact| {
            let command = layout.build_command(artifact);
            let args: Vec<_> = command
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            assert_eq!(args[0], "build");
            args.join(" ")
        };
        let tapswitch = args(Artifact::Tapswitch);
        assert!(
            tapswitch
                .ends_with("-p tools --bin tapswitch --profile release --target-dir /w/target"),
            "{tapswitch}"
        );
        let floor = args(Artifact::TapFloor);
        assert!(
            floor
                .ends_with("-p tools --example tap_floor --profile release --target-dir /w/target"),
            "{floor}"
        );
    }
}
