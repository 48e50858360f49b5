//! The state-dir convention shared by every verb: `--state-dir`, else `TESSERA_STATE_DIR`
//! (clap reads it), else `/var/lib/tessera` as root, else `$XDG_STATE_HOME/tessera`
//! (`~/.local/state/tessera` when unset).

use std::path::{Path, PathBuf};

pub fn resolve(flag: Option<&Path>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_path_buf();
    }
    if is_root() {
        return PathBuf::from("/var/lib/tessera");
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("tessera")
}

fn is_root() -> bool {
    // The owner of /proc/self is the effective user; avoids a libc dependency for one call.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}
