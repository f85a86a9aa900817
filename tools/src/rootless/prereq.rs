//! What rootless mode needs from the machine, and one line per missing
//! piece saying what it costs and which command fixes it. Everything that
//! does not need the missing piece keeps working (veth ports without TAP,
//! containers without the gateway's ping relay).

use std::path::Path;

/// What the machine says, read once ([`Facts::read`]) so that the rules
/// ([`missing`]) are pure and testable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `user.max_user_namespaces` (0 turns user namespaces off).
    pub max_user_namespaces: Option<u64>,
    /// `kernel.unprivileged_userns_clone` (Debian/Ubuntu kernels; 0 = off).
    pub unprivileged_userns_clone: Option<u64>,
    /// `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 24.04; 1 = on).
    pub apparmor_restrict: Option<u64>,
    /// Whether this user may open `/dev/net/tun` for reading and writing.
    pub tun_usable: bool,
    /// `net.ipv4.ping_group_range`.
    pub ping_group_range: Option<(u32, u32)>,
    /// This process's effective gid.
    pub gid: u32,
}

impl Facts {
    pub fn read() -> Facts {
        let number = |path: &str| {
            std::fs::read_to_string(Path::new("/proc/sys").join(path))
                .ok()
                .and_then(|t| t.trim().parse().ok())
        };
        let ping_group_range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
            .ok()
            .and_then(|t| {
                let mut it = t.split_whitespace().map(str::parse::<u32>);
                Some((it.next()?.ok()?, it.next()?.ok()?))
            });
        Facts {
            max_user_namespaces: number("user/max_user_namespaces"),
            unprivileged_userns_clone: number("kernel/unprivileged_userns_clone"),
            apparmor_restrict: number("kernel/apparmor_restrict_unprivileged_userns"),
            tun_usable: nix::unistd::access(
                "/dev/net/tun",
                nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
            )
            .is_ok(),
            ping_group_range,
            gid: ports::namespace::effective_ids().1,
        }
    }
}

/// A prerequisite the machine lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// What is missing and what it costs.
    pub what: String,
    /// The command that fixes it (as root).
    pub fix: String,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; to fix: {}", self.what, self.fix)
    }
}

/// Whether the user namespaces rootless containers live in can be made.
pub fn userns_missing(facts: &Facts) -> Vec<Missing> {
    let mut missing = Vec::new();
    if facts.max_user_namespaces == Some(0) {
        missing.push(Missing {
            what: "user namespaces are turned off (user.max_user_namespaces = 0): rootless containers cannot be made".into(),
            fix: "sudo sysctl -w user.max_user_namespaces=28633".into(),
        });
    }
    if facts.unprivileged_userns_clone == Some(0) {
        missing.push(Missing {
            what: "unprivileged user namespaces are turned off (kernel.unprivileged_userns_clone = 0): rootless containers cannot be made".into(),
            fix: "sudo sysctl -w kernel.unprivileged_userns_clone=1".into(),
        });
    }
    if facts.apparmor_restrict == Some(1) {
        missing.push(Missing {
            what: "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1): rootless containers cannot be made".into(),
            fix: "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile allowing userns for tapswitch)".into(),
        });
    }
    missing
}

/// Whether TAP ports are out of reach (`/dev/net/tun` closed to the user).
pub fn missing_tun(facts: &Facts) -> Option<Missing> {
    (!facts.tun_usable).then(|| Missing {
        what: "/dev/net/tun is not open to you: --tap ports are unavailable (veth ports and containers work)".into(),
        fix: "sudo chmod 0666 /dev/net/tun".into(),
    })
}

/// Everything rootless mode would like and the machine lacks.
pub fn missing(facts: &Facts) -> Vec<Missing> {
    let mut missing = userns_missing(facts);
    missing.extend(missing_tun(facts));
    if let Some((low, high)) = facts.ping_group_range
        && !(low..=high).contains(&facts.gid)
    {
        missing.push(Missing {
            what: format!(
                "ping sockets are closed to your group {} (net.ipv4.ping_group_range = {low} {high}): containers cannot ping the outside through the gateway (TCP, UDP and DNS work)",
                facts.gid
            ),
            fix: "sudo sysctl -w net.ipv4.ping_group_range='0 2147483647'".into(),
        });
    }
    missing
}

/// Logs one warning per missing prerequisite (serve's start in rootless mode).
pub fn report() {
    for line in missing(&Facts::read()) {
        log::warn!("rootless: {line}");
    }
}

/// For an error about making a user namespace: what is off and how to fix
/// it, or nothing when the settings look fine.
pub fn userns_hint() -> String {
    userns_missing(&Facts::read())
        .iter()
        .map(|m| format!("; {m}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fine() -> Facts {
        Facts {
            max_user_namespaces: Some(15000),
            unprivileged_userns_clone: None,
            apparmor_restrict: Some(0),
            tun_usable: true,
            ping_group_range: Some((0, 2147483647)),
            gid: 1000,
        }
    }

    #[test]
    fn a_fine_machine_misses_nothing() {
        assert_eq!(missing(&fine()), Vec::new());
    }

    #[test]
    fn each_missing_piece_is_one_line_with_its_fix() {
        let facts = Facts {
            max_user_namespaces: Some(0),
            unprivileged_userns_clone: Some(0),
            apparmor_restrict: Some(1),
            tun_usable: false,
            ping_group_range: Some((1, 0)),
            ..fine()
        };
        let lines: Vec<String> = missing(&facts).iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[0].ends_with("to fix: sudo sysctl -w user.max_user_namespaces=28633"));
        assert!(lines[1].contains("kernel.unprivileged_userns_clone=1"));
        assert!(lines[2].contains("apparmor_restrict_unprivileged_userns=0"));
        assert!(lines[3].starts_with("/dev/net/tun is not open to you"));
        assert!(lines[3].ends_with("sudo chmod 0666 /dev/net/tun"));
        assert!(lines[4].contains("ping_group_range = 1 0"));
        assert!(lines.iter().all(|l| !l.contains('\n')));
    }

    #[test]
    fn a_group_outside_the_ping_range_is_reported() {
        let facts = Facts {
            ping_group_range: Some((0, 999)),
            ..fine()
        };
        assert_eq!(missing(&facts).len(), 1);
    }
}
