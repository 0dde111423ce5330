//! The worker's scratch directory: one per process, under
//! `$TMPDIR/docflow-worker/<worker id>/`, holding downloaded documents while
//! they are extracted and the extractors' temporary files. Beside it the
//! process holds an exclusive lock on `<worker id>.lock` for its whole
//! life (taken before the directory exists). At start-up a worker removes
//! every directory whose lock it can take: the leftovers of processes that
//! died without cleaning up.

use std::{
    fs::{File, OpenOptions},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use nix::fcntl::{Flock, FlockArg};

/// A directory with no lock file is one a process died making; younger
/// than this, it may be one a process is making right now.
const HALF_MADE_AFTER: Duration = Duration::from_secs(60);

/// A scratch directory, removed when dropped.
pub struct Scratch {
    path: PathBuf,
    lock_path: PathBuf,
    _lock: Flock<File>,
}

impl Scratch {
    /// Creates this process's directory under `root` (after clearing the
    /// directories of dead processes there).
    pub fn create(root: &Path, owner: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", root.display()))?;
        let removed = remove_abandoned(root);
        if removed > 0 {
            tracing::info!(removed, root = %root.display(), "removed scratch directories of workers that died");
        }
        let lock_path = root.join(format!("{owner}.lock"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock_path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", lock_path.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| anyhow::anyhow!("cannot lock {}: {e}", lock_path.display()))?;
        let path = root.join(owner);
        std::fs::create_dir_all(&path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
        Ok(Self {
            path,
            lock_path,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// Removes the directories under `root` whose owner no longer holds their
/// lock, with their lock files. Returns how many.
fn remove_abandoned(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        let lock_path = dir.with_extension("lock");
        let abandoned = match File::open(&lock_path) {
            // Taking the lock means nobody holds it: its process is gone.
            Ok(file) => Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok(),
            Err(_) => older_than(&dir, HALF_MADE_AFTER),
        };
        if abandoned && std::fs::remove_dir_all(&dir).is_ok() {
            let _ = std::fs::remove_file(&lock_path);
            removed += 1;
        }
    }
    removed
}

fn older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|elapsed| elapsed > age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_owners_directory_is_removed_and_a_live_ones_kept() {
        let root = tempfile::tempdir().expect("tempdir");
        let live = Scratch::create(root.path(), "live").expect("live");
        std::fs::write(live.path().join("doc.pdf"), b"x").expect("write");
        // A process that died: its directory and files, but nobody holds
        // its lock.
        let dead = root.path().join("dead");
        std::fs::create_dir_all(&dead).expect("mkdir");
        std::fs::write(root.path().join("dead.lock"), b"").expect("lock file");
        std::fs::write(dead.join("doc.pdf"), b"x").expect("write");
        // One a process is making right now: no lock file yet, but young.
        let being_made = root.path().join("being-made");
        std::fs::create_dir_all(&being_made).expect("mkdir");

        let next = Scratch::create(root.path(), "next").expect("next");
        assert!(!dead.exists());
        assert!(!root.path().join("dead.lock").exists());
        assert!(
            being_made.exists(),
            "a young directory without a lock is left alone"
        );
        assert!(
            live.path().join("doc.pdf").exists(),
            "a live worker's files stay"
        );
        let next_path = next.path().to_path_buf();
        drop(next);
        assert!(
            !next_path.exists(),
            "a clean exit removes its own directory"
        );
    }
}
