//! A pseudo-terminal for a command run with a TTY (`kubectl exec -t`): the command gets
//! the terminal's device as stdin, stdout and stderr, in a session of its own with the
//! terminal as its controlling one (so a shell does job control and ^C reaches it), and
//! the caller keeps the controlling side, non-blocking, to carry bytes and resizes.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

fn check(r: libc::c_int) -> std::io::Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Sets `fd` close-on-exec, and non-blocking when asked.
fn set_flags(fd: libc::c_int, nonblocking: bool) -> std::io::Result<()> {
    unsafe {
        let fd_flags = check(libc::fcntl(fd, libc::F_GETFD))?;
        check(libc::fcntl(fd, libc::F_SETFD, fd_flags | libc::FD_CLOEXEC))?;
        if nonblocking {
            let fl = check(libc::fcntl(fd, libc::F_GETFL))?;
            check(libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK))?;
        }
    }
    Ok(())
}

/// Gives `cmd` a new terminal of `cols` × `rows` (0 × 0: unknown yet) and returns its
/// controlling side, non-blocking.
pub fn attach(cmd: &mut Command, cols: u16, rows: u16) -> std::io::Result<File> {
    let (mut controller, mut device) = (0, 0);
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    check(unsafe {
        libc::openpty(
            &mut controller,
            &mut device,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    })?;
    // Owned at once, so both close on any error below.
    let (controller, device) = unsafe {
        (
            OwnedFd::from_raw_fd(controller),
            OwnedFd::from_raw_fd(device),
        )
    };
    set_flags(controller.as_raw_fd(), true)?;
    set_flags(device.as_raw_fd(), false)?;
    cmd.stdin(Stdio::from(device.try_clone()?))
        .stdout(Stdio::from(device.try_clone()?))
        .stderr(Stdio::from(device));
    // Between fork and exec: a session of its own, with the terminal (now fd 0) as its
    // controlling terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(File::from(controller))
}

/// Tells the terminal (by its controlling side) its new size; the command gets SIGWINCH.
pub fn resize(controller: &File, cols: u16, rows: u16) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    check(unsafe { libc::ioctl(controller.as_raw_fd(), libc::TIOCSWINSZ, &size) }).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_command_sees_its_terminal_and_its_size() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "test -t 0 && test -t 1 && stty size"]);
        let controller = attach(&mut cmd, 80, 24).expect("a terminal");
        resize(&controller, 132, 43).expect("resized");
        let mut child = cmd.spawn().expect("spawned");
        drop(cmd);
        let status = child.wait().expect("exited");
        assert!(status.success());
        // Non-blocking: read what is there.
        let mut out = String::new();
        let mut buf = [0u8; 256];
        let mut reader = &controller;
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert_eq!(out.trim(), "43 132");
    }
}
