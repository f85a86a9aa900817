//! Which kernel the switch runs on, for features that came with a release
//! (fanout lanes that ignore outgoing frames, UDP GSO from userspace).

/// Whether the running kernel is at least `wanted` (major, minor).
pub(crate) fn running_at_least(wanted: (u32, u32)) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    release_at_least(&release, wanted)
}

/// Compares a kernel release string ("6.18.44-fc-v657") with (major, minor).
fn release_at_least(release: &str, wanted: (u32, u32)) -> bool {
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= wanted,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::release_at_least;

    #[test]
    fn kernel_releases_compare_by_major_then_minor() {
        assert!(release_at_least("6.18.44-fc-v657\n", (6, 5)));
        assert!(release_at_least("6.5.0", (6, 5)));
        assert!(release_at_least("7.0-rc1", (6, 5)));
        assert!(!release_at_least("6.1.0-27-amd64", (6, 5)));
        assert!(!release_at_least("5.19.3", (6, 5)));
        assert!(!release_at_least("", (6, 5)));
        assert!(!release_at_least("garbage", (6, 5)));
    }
}
