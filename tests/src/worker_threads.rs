//! A switch's worker threads as the kernel schedules them, read from
//! `/proc/PID/task`: their policy and their time slice.

/// One `tapswitch-w*` thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerThread {
    pub name: String,
    /// The scheduling policy: 0 ordinary (SCHED_OTHER), 1 SCHED_FIFO.
    pub policy: u32,
    /// The time slice in nanoseconds, where `/proc/PID/task/TID/sched`
    /// shows it (`se.slice`: kernels with EEVDF and scheduler debugging).
    pub slice_ns: Option<u64>,
    /// The CPU time it used so far, in clock ticks (user and system).
    pub cpu_ticks: u64,
}

/// The worker threads of process `pid`.
pub fn worker_threads(pid: u32) -> Vec<WorkerThread> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the switch's threads");
    let mut workers = Vec::new();
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("tapswitch-w") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).expect("a thread's stat");
        // Field 41 is the policy; the name (field 2) may hold spaces, so
        // count from the closing parenthesis (field 3 is the first after it).
        let after_name = &stat[stat.rfind(')').expect("stat has a name") + 2..];
        let fields: Vec<&str> = after_name.split(' ').collect();
        let policy = fields.get(41 - 3).expect("a policy field");
        let ticks = |field: usize| -> u64 { fields[field - 3].parse().expect("a number") };
        let sched = std::fs::read_to_string(task.path().join("sched")).unwrap_or_default();
        let slice_ns = sched
            .lines()
            .find(|l| l.starts_with("se.slice"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse().ok());
        workers.push(WorkerThread {
            name: comm.trim().to_string(),
            policy: policy.parse().expect("a number"),
            slice_ns,
            // Fields 14 and 15: user and system time.
            cpu_ticks: ticks(14) + ticks(15),
        });
    }
    workers
}

/// Whether this kernel gives an ordinary thread the time slice it asks for
/// (Linux 6.12 and later), as `/proc` shows it.
pub fn slices_granted_and_shown(workers: &[WorkerThread]) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let mut number = || {
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let version = (number(), number());
    version >= (6, 12) && workers.iter().all(|w| w.slice_ns.is_some())
}
