//! Network namespaces and the commands that shape them (`ip`, `iptables-restore`), entering
//! a namespace from a thread or a child process, and finding the processes inside one.
//! Every namespace a mesh creates carries the mesh's prefix, so teardown finds them all.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::RuntimeError;

pub const NETNS_DIR: &str = "/var/run/netns";

pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Runs a command to completion; its stderr is the error.
pub fn run(argv: &[&str], stdin: Option<&str>) -> Result<(), RuntimeError> {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let failed = |why: String| RuntimeError::Command {
        command: argv.join(" "),
        why,
    };
    let mut child = cmd.spawn().map_err(|e| failed(e.to_string()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

pub fn add(name: &str) -> Result<(), RuntimeError> {
    run(&["ip", "netns", "add", name], None)?;
    run(&["ip", "-n", name, "link", "set", "lo", "up"], None)
}

/// Kills every process inside the namespace (they are the mesh's: pods and exec'ed
/// commands), then deletes it; its interfaces and iptables rules go with it.
pub fn delete(name: &str) -> Result<(), RuntimeError> {
    let p = path(name);
    for _ in 0..50 {
        let pids = processes_in(&p);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if p.exists() {
        run(&["ip", "netns", "del", name], None)?;
    }
    Ok(())
}

/// The namespaces whose names start with `prefix`.
pub fn list(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Processes whose network namespace is the one bound at `ns_path`.
pub fn processes_in(ns_path: &Path) -> Vec<libc::pid_t> {
    let Ok(target) = std::fs::metadata(ns_path) else {
        return vec![];
    };
    let me = std::process::id() as libc::pid_t;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino())
        })
        .collect()
}

/// Runs `f` on a thread that entered the namespace (sockets it creates live there).
pub fn within<T: Send + 'static>(
    ns_path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let file = std::fs::File::open(ns_path)?;
    std::thread::spawn(move || {
        enter_net(&file)?;
        Ok(f())
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace thread panicked"))?
}

/// Moves the calling thread into the network namespace open at `file`.
pub fn enter_net(file: &std::fs::File) -> std::io::Result<()> {
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A bind mount a pod's process gets in its own mount namespace.
#[derive(Debug, Clone)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Makes `cmd` start inside a pod: its network namespace, its own hostname (the pod's
/// name), a private mount namespace with the pod's `/etc/hosts`, `/etc/resolv.conf`,
/// `/tmp` and volume binds, and optionally another uid/gid. The namespace file must stay
/// open until the command is spawned.
pub fn enter_pod(
    cmd: &mut Command,
    netns: &std::fs::File,
    hostname: &str,
    binds: &[Bind],
    user: Option<(u32, u32)>,
) -> std::io::Result<()> {
    let hostname = hostname.as_bytes().to_vec();
    let fd = netns.as_raw_fd();
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    // In order: each source is resolved in the view the binds before it made.
    let binds: Vec<(CString, CString, bool)> = binds
        .iter()
        .map(|b| Ok((c(&b.source)?, c(&b.target)?, b.read_only)))
        .collect::<std::io::Result<_>>()?;
    let root = CString::new("/").map_err(std::io::Error::other)?;
    // Only async-signal-safe calls between fork and exec: no allocation below.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0
                || libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) != 0
                || libc::sethostname(hostname.as_ptr().cast(), hostname.len()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Nothing mounted here propagates back to the host.
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for (source, target, read_only) in &binds {
                if libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if *read_only
                    && libc::mount(
                        std::ptr::null(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                        std::ptr::null(),
                    ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some((uid, gid)) = user {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}
