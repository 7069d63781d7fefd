//! Who holds a number: a process, identified so that PID reuse cannot fool a liveness check.
//!
//! A holder is one `u64`: the pid in the low 22 bits (Linux's largest pid is 2^22) and the
//! process start time, in clock ticks since boot (`/proc/<pid>/stat` field 22), in the high 42
//! bits. 0 means no holder. A process is alive when `/proc/<pid>/stat` exists, is not a zombie,
//! and shows the same start time: a new process that got a dead holder's pid has another start
//! time, so the old holder still counts as dead.
//!
//! Elsewhere (untested) the start time is unknown and recorded as 0; liveness is `kill(pid, 0)`,
//! which PID reuse can fool.

use std::sync::OnceLock;

const PID_BITS: u32 = 22;
const PID_MASK: u64 = (1 << PID_BITS) - 1;

/// A packed holder record: see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Holder(pub u64);

impl Holder {
    /// The record for a process.
    pub fn new(pid: u32, start_ticks: u64) -> Holder {
        Holder((start_ticks << PID_BITS) | (pid as u64 & PID_MASK))
    }

    /// The process id.
    pub fn pid(self) -> u32 {
        (self.0 & PID_MASK) as u32
    }

    /// The process start time in clock ticks since boot (0 where unknown).
    pub fn start_ticks(self) -> u64 {
        self.0 >> PID_BITS
    }

    /// This process. Read once: a process that forks without exec keeps its parent's identity.
    pub fn current() -> Holder {
        static CURRENT: OnceLock<Holder> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let pid = std::process::id();
            Holder::new(pid, start_ticks(pid).unwrap_or(0))
        })
    }

    /// Whether the process this record names is still running.
    pub fn is_alive(self) -> bool {
        if self.0 == 0 {
            return false;
        }
        if cfg!(target_os = "linux") {
            return match process_stat(self.pid()) {
                Some((state, start)) => !matches!(state, 'Z' | 'X') && start == self.start_ticks(),
                None => false,
            };
        }
        // SAFETY: kill with signal 0 only checks that the process exists.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

/// A process's start time in clock ticks since boot, on Linux.
fn start_ticks(pid: u32) -> Option<u64> {
    process_stat(pid).map(|(_, start)| start)
}

/// The state letter and start time of `/proc/<pid>/stat`, or `None` if there is no such process.
fn process_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Fields 3 (state) and 22 (start time) of a `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may itself contain spaces and parentheses: fields are counted from the
/// last `)`.
fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks() {
        let h = Holder::new(4_194_303, 123_456_789_012);
        assert_eq!((h.pid(), h.start_ticks()), (4_194_303, 123_456_789_012));
        assert_ne!(Holder::current().0, 0);
        assert_eq!(Holder::current().pid(), std::process::id());
    }

    #[test]
    fn parses_stat_lines_with_awkward_command_names() {
        let line =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 98765 1000 50";
        assert_eq!(parse_stat(line), Some(('S', 98765)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = Holder::current();
        assert!(me.is_alive());
        // Our pid with another start time: what a dead holder whose pid was reused looks like.
        assert!(!Holder::new(me.pid(), me.start_ticks() + 1).is_alive());
        assert!(!Holder(0).is_alive());
        // A process that has exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let recorded = Holder::new(pid, start_ticks(pid).unwrap_or(0));
        child.wait().unwrap();
        assert!(!recorded.is_alive());
    }
}
