//! `RLIMIT_NOFILE`: how many descriptors the process may hold.
//!
//! The soft limit goes up to the hard limit (anyone may do that). A hard
//! limit too low for the flow table (1,024 on some machines) goes up too
//! when the process may raise it (`CAP_SYS_RESOURCE`, root's): to the
//! kernel's ceiling `fs.nr_open`, at most [`HARD_LIMIT_CAP`], the value
//! Docker's and containerd's units give `LimitNOFILE`.

use std::io;

/// The most the hard limit is raised to (2^20, Docker's `LimitNOFILE`).
pub const HARD_LIMIT_CAP: u64 = 1 << 20;
/// A hard limit below this is raised when the process may: room for the
/// gateway's 16 Ki flows (a descriptor each), the published ports' clients
/// and the ports, with a margin.
pub const HARD_LIMIT_WANTED: u64 = 1 << 16;

/// A soft and a hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimits {
    pub soft: u64,
    pub hard: u64,
}

/// What the process holds after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaisedNofile {
    pub limits: NofileLimits,
    /// The hard limit was too low and could not be raised (no
    /// `CAP_SYS_RESOURCE`): the limits are the most an unprivileged raise
    /// gets.
    pub hard_limit_stuck: bool,
}

/// The limits to ask for, in order, until one is granted: the first raises
/// the hard limit when it is below [`HARD_LIMIT_WANTED`] (to `nr_open`, at
/// most [`HARD_LIMIT_CAP`]), the last only lifts the soft limit to the hard
/// one. Empty when nothing is to be raised. Pure.
pub fn nofile_attempts(current: NofileLimits, nr_open: Option<u64>) -> Vec<NofileLimits> {
    let mut attempts = Vec::new();
    let ceiling = nr_open.unwrap_or(HARD_LIMIT_CAP).min(HARD_LIMIT_CAP);
    if current.hard < HARD_LIMIT_WANTED && ceiling > current.hard {
        attempts.push(NofileLimits {
            soft: ceiling,
            hard: ceiling,
        });
    }
    if current.soft < current.hard {
        attempts.push(NofileLimits {
            soft: current.hard,
            hard: current.hard,
        });
    }
    attempts
}

/// Raises the limits on open descriptors as [`nofile_attempts`] says.
pub(crate) fn raise_nofile() -> io::Result<RaisedNofile> {
    let current = get_nofile()?;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse().ok());
    let attempts = nofile_attempts(current, nr_open);
    let mut limits = current;
    let mut last_error = None;
    for attempt in &attempts {
        match set_nofile(*attempt) {
            Ok(()) => {
                limits = *attempt;
                last_error = None;
                break;
            }
            Err(err) => last_error = Some(err),
        }
    }
    // Only the last attempt (the soft limit alone) cannot fail for want of
    // privilege: its failure is a real error.
    if let Some(err) = last_error
        && limits == current
        && current.soft < current.hard
    {
        return Err(err);
    }
    Ok(RaisedNofile {
        limits,
        hard_limit_stuck: limits.hard < HARD_LIMIT_WANTED
            && attempts.first().is_some_and(|a| a.hard > limits.hard),
    })
}

fn get_nofile() -> io::Result<NofileLimits> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(NofileLimits {
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

fn set_nofile(limits: NofileLimits) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: limits.soft,
        rlim_max: limits.hard,
    };
    // SAFETY: setrlimit reads one rlimit from a struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(soft: u64, hard: u64) -> NofileLimits {
        NofileLimits { soft, hard }
    }

    #[test]
    fn a_low_hard_limit_is_raised_to_nr_open_then_the_soft_one_alone() {
        assert_eq!(
            nofile_attempts(limits(1024, 1024), Some(1 << 20)),
            vec![limits(1 << 20, 1 << 20)],
            "soft already at the hard limit: only the raise of both"
        );
        assert_eq!(
            nofile_attempts(limits(1024, 4096), Some(1 << 20)),
            vec![limits(1 << 20, 1 << 20), limits(4096, 4096)],
            "without the privilege, the soft limit still goes up"
        );
        // The kernel's ceiling below the cap, above it, or unreadable.
        assert_eq!(
            nofile_attempts(limits(1024, 1024), Some(200_000))[0],
            limits(200_000, 200_000)
        );
        assert_eq!(
            nofile_attempts(limits(1024, 1024), Some(1 << 30))[0],
            limits(HARD_LIMIT_CAP, HARD_LIMIT_CAP)
        );
        assert_eq!(
            nofile_attempts(limits(1024, 1024), None)[0],
            limits(HARD_LIMIT_CAP, HARD_LIMIT_CAP)
        );
    }

    #[test]
    fn a_hard_limit_high_enough_is_left_alone() {
        assert_eq!(
            nofile_attempts(limits(1024, 524_288), Some(1 << 20)),
            vec![limits(524_288, 524_288)],
            "only the soft limit goes up"
        );
        assert_eq!(
            nofile_attempts(limits(HARD_LIMIT_WANTED, HARD_LIMIT_WANTED), Some(1 << 20)),
            vec![]
        );
        // A hard limit already at the kernel's ceiling cannot go higher.
        assert_eq!(nofile_attempts(limits(1024, 1024), Some(1024)), vec![]);
    }
}
