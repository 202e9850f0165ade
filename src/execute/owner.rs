//! Who made a temporary directory or a lock: host, boot id, PID namespace, PID and the process's
//! start time. A PID alone proves nothing on a shared file system or across containers (issue
//! 11, item 2); these five together prove that a process on this host is gone.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The identity of one nemoconv process, as written into its markers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The host name.
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`: changes at every boot.
    pub boot_id: String,
    /// The PID namespace (`/proc/self/ns/pid`): a PID means something only inside it.
    pub pid_ns: String,
    /// The process id.
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat`, field 22), so a
    /// reused PID is told apart.
    pub start_ticks: u64,
}

/// What a marker says about the process that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// A process of this host, boot and PID namespace that has exited.
    Dead,
    /// Running, or on another host, boot or namespace, or no readable marker: leave it alone.
    Unknown(String),
}

impl Owner {
    /// This process.
    pub fn me() -> Owner {
        let pid = std::process::id();
        Owner {
            host: host_name(),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
        }
    }

    /// The marker's text.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string(self).expect("strings and integers serialize");
        text.push('\n');
        text
    }

    /// Reads the marker at `path` and says whether its process is provably gone.
    pub fn liveness_of(path: &Path) -> Liveness {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Liveness::Unknown("no readable owner marker".to_string());
        };
        let Ok(owner) = serde_json::from_str::<Owner>(&text) else {
            return Liveness::Unknown("an owner marker nemoconv cannot read".to_string());
        };
        owner.liveness(&Owner::me())
    }

    fn liveness(&self, me: &Owner) -> Liveness {
        let who = format!("pid {} on host {:?}", self.pid, self.host);
        if self.host != me.host || self.boot_id != me.boot_id || me.boot_id.is_empty() {
            return Liveness::Unknown(format!("{who}, another host or boot"));
        }
        if self.pid_ns != me.pid_ns || me.pid_ns.is_empty() {
            return Liveness::Unknown(format!("{who}, in another PID namespace (container)"));
        }
        match start_ticks(self.pid) {
            Some(ticks) if ticks == self.start_ticks => {
                Liveness::Unknown(format!("{who}, still running"))
            }
            _ => Liveness::Dead,
        }
    }
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of `/proc/PID/stat`, or None when there is no such process.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields 3.. follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_gone_one_is_dead() {
        let me = Owner::me();
        assert!(me.start_ticks > 0, "start time of this process");
        assert!(matches!(me.liveness(&me), Liveness::Unknown(_)));
        let reused = Owner {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert_eq!(reused.liveness(&me), Liveness::Dead);
    }

    #[test]
    fn other_hosts_boots_and_namespaces_are_never_proven_dead() {
        let me = Owner::me();
        let gone = Owner {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        for other in [
            Owner {
                host: "elsewhere".into(),
                ..gone.clone()
            },
            Owner {
                boot_id: "another-boot".into(),
                ..gone.clone()
            },
            Owner {
                pid_ns: "pid:[1]".into(),
                ..gone.clone()
            },
        ] {
            assert!(matches!(other.liveness(&me), Liveness::Unknown(_)));
        }
    }
}
