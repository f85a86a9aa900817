//! Which CPU a worker runs on, for ports read in per-CPU lanes.
//!
//! A packet socket in a CPU fanout group gets the frames that arrived on
//! CPUs `c` with `c % lanes == lane` (see [`crate::packet::open_lanes`]).
//! The frames a container sends arrive on the CPU the container's process
//! runs on, so the worker reading lane `lane` is kept on exactly those CPUs:
//! waking it is then a switch between two threads of one CPU instead of a
//! wake-up sent to another CPU, which on a virtual machine costs tens of
//! microseconds per hop.

use std::io;

use crate::sys;

/// The CPUs this thread may run on, in ascending order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    sys::cpu::allowed_cpus()
}

/// The CPUs among `allowed` whose frames land in lane `lane` of `lanes`.
/// Empty when none does (the worker is then best left unpinned).
pub fn lane_cpus(lane: usize, lanes: usize, allowed: &[usize]) -> Vec<usize> {
    if lanes == 0 {
        return Vec::new();
    }
    allowed
        .iter()
        .copied()
        .filter(|cpu| cpu % lanes == lane)
        .collect()
}

/// The CPU the calling thread runs on at this moment (it may move right
/// after; good enough to guess which lane a frame just sent produced).
pub fn current_cpu() -> Option<usize> {
    sys::cpu::current_cpu()
}

/// Gives the calling thread the lowest real-time priority (SCHED_FIFO 1)
/// or takes it back (`false`: SCHED_OTHER). Needs CAP_SYS_NICE to raise.
///
/// A real-time thread runs as soon as it is woken, ahead of every ordinary
/// thread on its CPU, as the kernel's own softirq work does; an ordinary
/// one in another scheduling group (a service, a different session) may
/// first wait for the thread that woke it.
pub fn set_realtime(on: bool) -> io::Result<()> {
    sys::cpu::set_realtime(on.then_some(1))
}

/// The shortest time slice the kernel grants an ordinary thread (it makes
/// shorter requests this long).
const SHORTEST_SLICE_NS: u64 = 100_000;

/// Gives the calling thread, while it is an ordinary thread, the shortest
/// time slice (0.1 ms), or the default one again with `false`. The kernel's
/// scheduler (EEVDF, Linux 6.12 and later) puts a thread's deadline one
/// slice after it may run, so a woken thread with a shorter slice than the
/// running one's takes the CPU at once, as a real-time thread would, but
/// only for its slice. Needs no privilege; older kernels ignore it, and a
/// real-time thread is left as it is.
pub fn set_short_slices(on: bool) -> io::Result<()> {
    sys::cpu::set_slice(on.then_some(SHORTEST_SLICE_NS))
}

/// Whether the machine has at least as many runnable threads as online
/// CPUs right now (the caller counts as one), so every CPU is likely busy.
/// False when that cannot be read.
pub fn fully_busy() -> bool {
    let Ok(loadavg) = std::fs::read_to_string("/proc/loadavg") else {
        return false;
    };
    runnable_threads(&loadavg).is_some_and(|runnable| runnable >= sys::cpu::online_cpus())
}

/// Moves the calling thread off the CPU it runs on to another of
/// `allowed`, and leaves it free to run on all of `allowed` again. The
/// kernel migrates a thread at once when its CPU leaves its affinity, and
/// widening the affinity afterwards moves nothing, so the thread stays
/// where the kernel put it until the scheduler decides otherwise. Returns
/// whether it moved (not when `allowed` has no other CPU).
pub fn move_to_another_cpu(allowed: &[usize]) -> io::Result<bool> {
    let here = current_cpu();
    let others: Vec<usize> = allowed
        .iter()
        .copied()
        .filter(|&cpu| Some(cpu) != here)
        .collect();
    if others.is_empty() || others.len() == allowed.len() {
        return Ok(false);
    }
    sys::cpu::pin_current_thread(&others)?;
    sys::cpu::pin_current_thread(allowed)?;
    Ok(true)
}

/// The runnable threads in /proc/loadavg ("0.52 0.58 0.59 3/93 12345":
/// the fourth field is runnable/total).
fn runnable_threads(loadavg: &str) -> Option<usize> {
    loadavg
        .split_whitespace()
        .nth(3)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// The CPU time the calling thread has used so far: the time it ran, not
/// the time it was ready but another thread or the hypervisor had its CPU.
/// `None` where the clock cannot be read.
pub fn thread_cpu_time() -> Option<std::time::Duration> {
    sys::cpu::thread_cpu_time().ok()
}

/// Keeps the calling thread on `cpus` (an empty list changes nothing).
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    sys::cpu::pin_current_thread(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runnable_threads_are_the_fourth_field_of_loadavg() {
        assert_eq!(runnable_threads("0.52 0.58 0.59 3/93 12345\n"), Some(3));
        assert_eq!(runnable_threads("1.00 0.50 0.25 17/1024 1"), Some(17));
        assert_eq!(runnable_threads("0.52 0.58 0.59"), None);
        assert_eq!(runnable_threads("0.52 0.58 0.59 x/93 1"), None);
        assert_eq!(runnable_threads(""), None);
    }

    #[test]
    fn this_machine_has_an_online_cpu() {
        assert!(crate::sys::cpu::online_cpus() >= 1);
    }

    #[test]
    fn lanes_partition_the_allowed_cpus_by_the_kernels_modulo() {
        let allowed = [0, 1, 2, 3, 5];
        assert_eq!(lane_cpus(0, 2, &allowed), vec![0, 2]);
        assert_eq!(lane_cpus(1, 2, &allowed), vec![1, 3, 5]);
        assert_eq!(lane_cpus(0, 1, &allowed), allowed.to_vec());
        // A cpuset of {0, 2} never runs lane 1's CPUs: leave it unpinned.
        assert!(lane_cpus(1, 2, &[0, 2]).is_empty());
        assert!(lane_cpus(0, 0, &allowed).is_empty());
    }

    #[test]
    fn this_thread_runs_somewhere_and_can_be_kept_there() {
        let allowed = allowed_cpus().unwrap();
        assert!(!allowed.is_empty());
        // Pinning to what is already allowed succeeds and changes nothing.
        pin_current_thread(&allowed).unwrap();
        assert_eq!(allowed_cpus().unwrap(), allowed);
        let here = current_cpu().expect("sched_getcpu works on Linux");
        pin_current_thread(&[here]).unwrap();
        assert_eq!(current_cpu(), Some(here));
        pin_current_thread(&allowed).unwrap();
    }

    #[test]
    fn moving_to_another_cpu_leaves_the_thread_free_to_run_anywhere_again() {
        let allowed = allowed_cpus().unwrap();
        let here = current_cpu().expect("sched_getcpu works on Linux");
        pin_current_thread(&[here]).unwrap();
        let moved = move_to_another_cpu(&allowed).unwrap();
        assert_eq!(moved, allowed.len() > 1);
        // Where it runs now is the scheduler's business (it may move the
        // thread back at once); its affinity must be the allowed set again.
        assert_eq!(allowed_cpus().unwrap(), allowed, "affinity not restored");
        // Only this CPU allowed: nowhere to go, nothing changes.
        let here = current_cpu().unwrap();
        pin_current_thread(&[here]).unwrap();
        assert!(!move_to_another_cpu(&[here]).unwrap());
        assert_eq!(allowed_cpus().unwrap(), vec![here]);
        pin_current_thread(&allowed).unwrap();
    }

    #[test]
    fn narrowing_the_affinity_migrates_the_thread_before_the_call_returns() {
        // What `move_to_another_cpu` relies on.
        let allowed = allowed_cpus().unwrap();
        if allowed.len() < 2 {
            return; // one CPU: nowhere to migrate to
        }
        for _ in 0..20 {
            let here = current_cpu().unwrap();
            let others: Vec<usize> = allowed.iter().copied().filter(|&c| c != here).collect();
            pin_current_thread(&others).unwrap();
            let now = current_cpu().unwrap();
            assert!(others.contains(&now), "on CPU {now}, allowed {others:?}");
            pin_current_thread(&allowed).unwrap();
        }
    }

    #[test]
    fn a_thread_can_always_go_back_to_ordinary_scheduling() {
        std::thread::spawn(|| {
            // Raising needs CAP_SYS_NICE (CI runs as root); lowering never fails.
            let raised = set_realtime(true);
            set_realtime(false).unwrap();
            raised
        })
        .join()
        .unwrap()
        .ok();
    }
}
