//! Advisory locks: one lowrank process at a time per run folder, sweep folder or output file.
//!
//! A lock is a file (`.lowrank.lock` in a folder, or `.NAME.lock` beside a file) held with the
//! operating system's advisory lock (`flock`), so that it is released the moment its owner exits,
//! however it exits (SIGKILL included). The file records the owner (pid, host, command, start
//! time) so that a refused process can say who holds it. A lock file left by a dead process holds
//! no operating-system lock any more and is simply taken over (and said so). On a file system
//! without `flock` support the owner's pid is checked instead: a lock whose pid no longer runs on
//! this host is stale and taken over.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a locked folder.
pub const FOLDER_LOCK: &str = ".lowrank.lock";

/// Who holds a lock (the lock file's contents, JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Host name (a pid means nothing on another host).
    pub host: String,
    /// The command line, shortened.
    pub command: String,
    /// Seconds since the Unix epoch when the lock was taken.
    pub since: u64,
}

impl Owner {
    fn me() -> Owner {
        let command: Vec<String> = std::env::args().collect();
        let mut command = command.join(" ");
        if command.len() > 200 {
            let cut = (0..=200).rev().find(|&i| command.is_char_boundary(i)).unwrap_or(0);
            command.truncate(cut);
            command.push('…');
        }
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Owner { pid: std::process::id(), host: host_name(), command, since }
    }
}

/// This machine's host name (empty when unknown).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

/// Whether process `pid` runs on this host (Linux: /proc/PID exists; elsewhere assumed alive).
pub fn pid_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A held lock; dropping it releases the lock and removes the lock file.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    file: Option<File>,
    shared: bool,
    /// The dead owner whose stale lock this one replaced, if any.
    pub took_over: Option<Owner>,
}

impl Lock {
    /// Locks the folder `dir` (which must exist) for `what` (e.g. "run folder"), as
    /// `dir/.lowrank.lock`.
    pub fn folder(dir: &Path, what: &str) -> Result<Lock> {
        Self::acquire(&dir.join(FOLDER_LOCK), what, dir)
    }

    /// Takes a shared lock on the folder `dir`: any number of shared holders, but no exclusive one
    /// (for the workers of one sweep, which coordinate through their trial storage). The lock file
    /// is left in place on release (another holder may still be using it).
    pub fn shared_folder(dir: &Path, what: &str) -> Result<Lock> {
        let path = dir.join(FOLDER_LOCK);
        for _ in 0..16 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io("create the lock file", &path, e))?;
            let owner = read_owner(&mut file);
            match file.try_lock_shared() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(locked(what, dir, &path, owner)),
                Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {}
                Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
            }
            if same_file(&file, &path) {
                return Ok(Lock { path, file: Some(file), shared: true, took_over: None });
            }
        }
        Err(Error::Other(format!("could not lock {} (the lock file kept changing); try again", path.display())))
    }

    /// Locks the file `path` (which need not exist yet) for `what`, as `.NAME.lock` beside it.
    pub fn file(path: &Path, what: &str) -> Result<Lock> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Self::acquire(&path.with_file_name(format!(".{name}.lock")), what, path)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn acquire(lock_path: &Path, what: &str, target: &Path) -> Result<Lock> {
        // Another process may remove the lock file between our open and our lock; then the lock
        // we hold is on a file nobody else can see, so try again on the new one.
        for _ in 0..16 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(lock_path)
                .map_err(|e| Error::io("create the lock file", lock_path, e))?;
            let previous = read_owner(&mut file);
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    // The owner writes its record right after locking: give it a moment.
                    let mut owner = previous;
                    for _ in 0..20 {
                        if owner.is_some() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        let _ = file.rewind();
                        owner = read_owner(&mut file);
                    }
                    return Err(locked(what, target, lock_path, owner));
                }
                Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                    // No flock here: fall back to the recorded pid.
                    if let Some(o) = previous.as_ref().filter(|o| o.host == host_name() && pid_alive(o.pid) && o.pid != std::process::id())
                    {
                        return Err(locked(what, target, lock_path, Some(o.clone())));
                    }
                }
                Err(TryLockError::Error(e)) => return Err(Error::io("lock", lock_path, e)),
            }
            if !same_file(&file, lock_path) {
                continue;
            }
            let mut lock = Lock {
                path: lock_path.to_path_buf(),
                file: None,
                shared: false,
                took_over: previous.filter(|o| o.pid != std::process::id()),
            };
            let text = serde_json::to_string(&Owner::me()).expect("serialisable") + "\n";
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(text.as_bytes()))
                .map_err(|e| Error::io("write the lock file", lock_path, e))?;
            lock.file = Some(file);
            return Ok(lock);
        }
        Err(Error::Other(format!("could not lock {} (the lock file kept changing); try again", lock_path.display())))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            if self.shared {
                let _ = file.unlock();
                return;
            }
            // Remove the file while still holding the lock, so no one locks a file about to vanish.
            let _ = std::fs::remove_file(&self.path);
            let _ = file.unlock();
        }
    }
}

fn read_owner(file: &mut File) -> Option<Owner> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

fn locked(what: &str, target: &Path, lock_path: &Path, owner: Option<Owner>) -> Error {
    Error::Locked {
        what: what.to_string(),
        path: target.to_path_buf(),
        owner: match owner {
            Some(o) => format!("process {} on {} ({})", o.pid, if o.host.is_empty() { "this host" } else { &o.host }, o.command),
            None => format!("another process (see {})", lock_path.display()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_owner_and_released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let first = Lock::folder(d.path(), "run folder").unwrap();
        assert!(first.took_over.is_none());
        let e = Lock::folder(d.path(), "run folder").unwrap_err().to_string();
        assert!(e.contains(&format!("process {}", std::process::id())) && e.contains("run folder"), "{e}");
        drop(first);
        assert!(!d.path().join(FOLDER_LOCK).exists(), "the lock file is removed on release");
        let again = Lock::folder(d.path(), "run folder").unwrap();
        assert!(again.took_over.is_none(), "a cleanly released lock is not stale");
    }

    #[test]
    fn a_stale_lock_of_a_dead_process_is_taken_over() {
        let d = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = Owner { pid: dead, host: host_name(), command: "lowrank train (killed)".into(), since: 0 };
        std::fs::write(d.path().join(FOLDER_LOCK), serde_json::to_string(&stale).unwrap()).unwrap();
        let lock = Lock::folder(d.path(), "run folder").unwrap();
        assert_eq!(lock.took_over.as_ref().map(|o| o.pid), Some(dead));
        let now: Owner = serde_json::from_str(std::fs::read_to_string(lock.path()).unwrap().trim()).unwrap();
        assert_eq!(now.pid, std::process::id());
    }

    #[test]
    fn shared_locks_coexist_and_keep_out_an_exclusive_one() {
        let d = tempfile::tempdir().unwrap();
        let a = Lock::shared_folder(d.path(), "sweep folder").unwrap();
        let b = Lock::shared_folder(d.path(), "sweep folder").unwrap();
        assert!(Lock::folder(d.path(), "sweep folder").is_err());
        drop((a, b));
        let x = Lock::folder(d.path(), "sweep folder").unwrap();
        assert!(Lock::shared_folder(d.path(), "sweep folder").unwrap_err().to_string().contains(&std::process::id().to_string()));
        drop(x);
    }

    #[test]
    fn file_locks_sit_beside_the_file() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("eval.json");
        let l = Lock::file(&out, "eval output").unwrap();
        assert_eq!(l.path(), d.path().join(".eval.json.lock"));
        assert!(Lock::file(&out, "eval output").unwrap_err().to_string().contains("eval output"));
    }
}
