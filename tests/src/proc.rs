//! Memory figures of a process, from `/proc/<pid>/status`, for the benchmarks.

use std::fs;

fn status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// The process's resident memory now, in KiB; 0 once it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The process's peak resident memory so far, in KiB; 0 once it is gone.
pub fn peak_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}
