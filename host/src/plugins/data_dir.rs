//! One host per data directory: an exclusive lock file in it, naming the holder.

use std::path::Path;

use super::LoadError;

/// Takes the exclusive lock of data directory `dir` (its `.ww-lock` file, which names the
/// holding process): two hosts appending to one store's log would each lose the other's
/// writes.
pub(super) fn lock_data_dir(component: &str, dir: &Path) -> Result<std::fs::File, LoadError> {
    use std::io::{Read as _, Seek as _, Write as _};
    let failed = |source: std::io::Error| LoadError::DataDir {
        component: component.to_owned(),
        path: dir.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(".ww-lock"))
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(failed)?;
            file.rewind().map_err(failed)?;
            writeln!(file, "{}", std::process::id()).map_err(failed)?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            Err(LoadError::DataDirInUse {
                component: component.to_owned(),
                path: dir.to_owned(),
                holder: if holder.is_empty() {
                    String::new()
                } else {
                    format!(" by process {holder}")
                },
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
    }
}
