//! CPU affinity (sched_getaffinity/sched_setaffinity, man 2
//! sched_setaffinity), scheduling policy and slice (sched_setscheduler,
//! sched_setattr), and the thread's CPU clock (clock_gettime).

use std::io;
use std::time::Duration;

/// The CPUs the calling thread may run on, in ascending order.
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of(cpu_set_t) bytes into `set`,
    // which lives across the call; pid 0 is the calling thread.
    let ret =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET only reads bit `cpu` of `set`, and `cpu` < its size in bits.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Lets the calling thread run only on `cpus` (an empty list changes nothing).
pub(crate) fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    // SAFETY: as above, all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    for &cpu in cpus.iter().filter(|&&cpu| cpu < max) {
        // SAFETY: CPU_SET only writes bit `cpu` of `set`, and `cpu` < its size in bits.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` lives across the call and the size passed is its size;
    // pid 0 is the calling thread.
    let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How many CPUs the machine has online (at least 1).
pub(crate) fn online_cpus() -> usize {
    // SAFETY: sysconf only reads a system setting; -1 means unknown.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online).unwrap_or(1).max(1)
}

/// Where the kernel lists the CPUs that may ever exist ("0-63", "0,2-5").
const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";

/// How many CPUs may ever exist (`num_possible_cpus()`): a per-CPU map's
/// value holds one slot for each, and the kernel copies them all.
pub(crate) fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string(POSSIBLE_CPUS)?;
    count_cpu_list(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot read {POSSIBLE_CPUS}: {text:?}"),
        )
    })
}

/// Counts the CPUs of a kernel CPU list ("0-3,8,10-11\n" is 7).
fn count_cpu_list(text: &str) -> Option<usize> {
    let mut count = 0;
    for part in text.trim().split(',') {
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (first.parse::<usize>().ok()?, last.parse::<usize>().ok()?),
            None => {
                let cpu = part.parse::<usize>().ok()?;
                (cpu, cpu)
            }
        };
        count += last.checked_sub(first)? + 1;
    }
    (count > 0).then_some(count)
}

/// The CPU the calling thread is running on right now.
pub(crate) fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu takes no arguments and only reads where the
    // thread runs; -1 means it is not available.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// Runs the calling thread under SCHED_FIFO at `priority` (1..=99), or back
/// under SCHED_OTHER with `None`.
pub(crate) fn set_realtime(priority: Option<i32>) -> io::Result<()> {
    let (policy, sched_priority) = match priority {
        Some(p) => (libc::SCHED_FIFO, p),
        None => (libc::SCHED_OTHER, 0),
    };
    let param = libc::sched_param { sched_priority };
    // SAFETY: `param` lives across the call; pid 0 is the calling thread.
    let ret = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the scheduler for time slices of `slice_ns` nanoseconds for the
/// calling thread if it runs under SCHED_OTHER (`sched_attr.sched_runtime`,
/// Linux 6.12 and later), or for the default slice with `None`. Keeps its
/// policy and nice value; a thread under another policy is left as it is.
pub(crate) fn set_slice(slice_ns: Option<u64>) -> io::Result<()> {
    let size = std::mem::size_of::<libc::sched_attr>();
    let mut attr = libc::sched_attr {
        size: size as u32,
        sched_policy: 0,
        sched_flags: 0,
        sched_nice: 0,
        sched_priority: 0,
        sched_runtime: 0,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: `attr` is a live sched_attr of `size` bytes the kernel fills
    // in; pid 0 is the calling thread.
    let ret = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr, size as u32, 0) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    if attr.sched_policy != libc::SCHED_OTHER as u32 {
        return Ok(());
    }
    /// From `<linux/sched.h>`: the one flag an ordinary thread may carry.
    const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;
    attr.size = size as u32;
    attr.sched_flags &= SCHED_FLAG_RESET_ON_FORK;
    attr.sched_runtime = slice_ns.unwrap_or(0);
    // SAFETY: `attr` is a live, complete sched_attr; pid 0 is the calling
    // thread.
    let ret = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`):
/// time it ran, not time it waited for a CPU, slept, or lost to the
/// hypervisor (steal, where the kernel accounts it).
pub(crate) fn thread_cpu_time() -> io::Result<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live timespec the kernel fills in.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_threads_cpu_time_grows_while_it_works_and_not_while_it_sleeps() {
        let start = thread_cpu_time().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu_time().unwrap() - start;
        assert!(slept < Duration::from_millis(5), "slept {slept:?}");
        // Spin until the clock shows 10 ms of work; on a busy machine that
        // takes longer, but a clock that does not grow never gets there.
        let from = thread_cpu_time().unwrap();
        let give_up = Instant::now() + Duration::from_secs(10);
        let mut worked = Duration::ZERO;
        while worked < Duration::from_millis(10) && Instant::now() < give_up {
            std::hint::black_box(worked);
            worked = thread_cpu_time().unwrap() - from;
        }
        assert!(worked >= Duration::from_millis(10), "worked {worked:?}");
    }

    #[test]
    fn cpu_lists_are_counted_as_the_kernel_writes_them() {
        assert_eq!(count_cpu_list("0\n"), Some(1));
        assert_eq!(count_cpu_list("0-63\n"), Some(64));
        assert_eq!(count_cpu_list("0-3,8,10-11\n"), Some(7));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn this_machine_has_possible_cpus() {
        assert!(possible_cpus().unwrap() >= 1);
    }

    /// The slice the scheduler gives the calling thread, as
    /// `/proc/thread-self/sched` shows it (`None` where it does not).
    fn own_slice() -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched.lines().find(|l| l.starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let number = |part: Option<&str>| part.and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
        (number(parts.next()), number(parts.next())) >= (major, minor)
    }

    #[test]
    fn a_thread_gets_the_slice_it_asks_for_and_the_default_back() {
        // A thread of its own: the test harness's may be shared.
        std::thread::spawn(|| {
            let before = own_slice();
            set_slice(Some(100_000)).expect("sched_setattr");
            let Some(short) = own_slice() else {
                eprintln!("skipped: this kernel shows no se.slice in /proc/thread-self/sched");
                return;
            };
            if !kernel_at_least(6, 12) {
                eprintln!("skipped: this kernel (before 6.12) has one slice for every thread");
                return;
            }
            assert_eq!(short, 100_000);
            set_slice(None).expect("sched_setattr");
            assert_eq!(own_slice(), before, "the default again");
        })
        .join()
        .unwrap();
    }
}
