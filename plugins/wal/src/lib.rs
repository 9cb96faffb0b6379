//! An append-only write-ahead log for the embedded store.
//!
//! Each record is framed as `length: u32 LE | crc32(payload): u32 LE | payload`. An append
//! returns only after the record is written and `sync_data` has returned, so an
//! acknowledged write survives a crash of the process. Opening the log replays every
//! intact record in order; the first frame that is incomplete, oversized or fails its
//! checksum marks the tail a crash tore off (or garbage after it): the file is cut back to
//! the last intact record and the recovery says how many bytes it dropped and why. Records
//! before that point are never touched.
//!
//! Plain `std`: it runs inside a `wasm32-wasip2` component (on its preopened data
//! directory) and natively, where its tests run.

mod journal;

pub use journal::{Journal, JournalRecovery, Made, Replay, SnapshotWriter, snapshot_from_files};

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Frame header: length and checksum.
const HEADER_BYTES: usize = 8;

/// The largest record accepted. A header claiming more is treated as a torn tail: no
/// record this store writes comes near it.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// What opening the log found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Intact records replayed.
    pub records: u64,
    /// Bytes cut off the end of the file.
    pub dropped_bytes: u64,
    /// Why they were cut off, when any were.
    pub reason: Option<String>,
}

/// An open log, positioned at its end.
#[derive(Debug)]
pub struct Wal {
    file: File,
    path: PathBuf,
    len: u64,
}

/// How a frame's payload is checked: the log's CRC-32 (4 bytes after the length), or
/// XXH3-64 (8 bytes), which snapshots use since version 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checksum {
    Crc32,
    Xxh3,
}

impl Checksum {
    /// The frame header's size: the length, then the checksum.
    pub(crate) fn header_bytes(self) -> usize {
        match self {
            Checksum::Crc32 => HEADER_BYTES,
            Checksum::Xxh3 => 4 + 8,
        }
    }

    /// The checksum of `payload`, widened to 64 bits.
    pub(crate) fn of(self, payload: &[u8]) -> u64 {
        match self {
            Checksum::Crc32 => u64::from(crc32fast::hash(payload)),
            Checksum::Xxh3 => xxhash_rust::xxh3::xxh3_64(payload),
        }
    }
}

/// Read one frame at the reader's position: `Ok(None)` at a clean end of file,
/// `Err(reason)` for a torn or corrupt frame.
pub(crate) fn read_frame(
    reader: &mut impl Read,
    remaining: u64,
    buffer: &mut Vec<u8>,
    checksum: Checksum,
) -> io::Result<Result<Option<()>, String>> {
    if remaining == 0 {
        return Ok(Ok(None));
    }
    let header_bytes = checksum.header_bytes();
    if remaining < header_bytes as u64 {
        return Ok(Err(format!("an incomplete header of {remaining} bytes")));
    }
    // The longer header's room; the log's leaves the last 4 bytes 0.
    let mut header = [0_u8; 12];
    reader.read_exact(header.get_mut(..header_bytes).unwrap_or_default())?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let expected = u64::from_le_bytes([
        header[4], header[5], header[6], header[7], header[8], header[9], header[10], header[11],
    ]);
    if len > MAX_RECORD_BYTES {
        return Ok(Err(format!("a header claiming {len} bytes")));
    }
    if (len as u64) > remaining - header_bytes as u64 {
        return Ok(Err(format!(
            "a record of {len} bytes with only {} written",
            remaining - header_bytes as u64
        )));
    }
    buffer.resize(len, 0);
    reader.read_exact(buffer)?;
    if checksum.of(buffer) != expected {
        return Ok(Err(format!(
            "a checksum mismatch in a record of {len} bytes"
        )));
    }
    Ok(Ok(Some(())))
}

impl Wal {
    /// Open (or create) the log at `path`, passing every intact record to `apply` in
    /// order, and cut off a torn tail. An error from `apply` stops the replay and is
    /// returned; the file is then left as it was.
    pub fn open(
        path: &Path,
        mut apply: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<(Wal, Recovery)> {
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if created {
            sync_parent(path);
        }
        let total = file.metadata()?.len();
        let mut recovery = Recovery::default();
        let mut good = 0_u64;
        {
            let mut reader = BufReader::new(&mut file);
            let mut buffer = Vec::new();
            loop {
                match read_frame(&mut reader, total - good, &mut buffer, Checksum::Crc32)? {
                    Ok(None) => break,
                    Ok(Some(())) => {
                        apply(&buffer)?;
                        good += (HEADER_BYTES + buffer.len()) as u64;
                        recovery.records += 1;
                    }
                    Err(reason) => {
                        recovery.dropped_bytes = total - good;
                        recovery.reason = Some(format!("{reason} at offset {good}"));
                        break;
                    }
                }
            }
        }
        if good < total {
            file.set_len(good)?;
            file.sync_data()?;
        }
        file.seek(SeekFrom::Start(good))?;
        Ok((
            Wal {
                file,
                path: path.to_owned(),
                len: good,
            },
            recovery,
        ))
    }

    /// Read a closed log (one no process appends to any more) without opening it for
    /// writing, passing every record to `apply`: the number of records, or an error at
    /// the first frame that does not check (a closed log was cut back to its last intact
    /// record when it was last opened, so a bad frame there is damage, not a torn tail).
    pub fn read_closed(
        path: &Path,
        mut apply: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<u64> {
        let file = File::open(path)?;
        let total = file.metadata()?.len();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut buffer = Vec::new();
        let (mut offset, mut records) = (0_u64, 0_u64);
        loop {
            match read_frame(&mut reader, total - offset, &mut buffer, Checksum::Crc32)? {
                Ok(None) => return Ok(records),
                Ok(Some(())) => {
                    apply(&buffer)?;
                    offset += (HEADER_BYTES + buffer.len()) as u64;
                    records += 1;
                }
                Err(reason) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {reason} at offset {offset}", path.display()),
                    ));
                }
            }
        }
    }

    /// Append one record; durable when this returns.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        self.append_all(&[payload])
    }

    /// Append several records with one sync; all durable when this returns.
    pub fn append_all(&mut self, payloads: &[&[u8]]) -> io::Result<()> {
        let mut frames = Vec::with_capacity(payloads.iter().map(|p| p.len() + HEADER_BYTES).sum());
        for payload in payloads {
            if payload.len() > MAX_RECORD_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a record of {} bytes exceeds the limit of {MAX_RECORD_BYTES}",
                        payload.len()
                    ),
                ));
            }
            frames.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            frames.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            frames.extend_from_slice(payload);
        }
        if let Err(e) = self
            .file
            .write_all(&frames)
            .and_then(|()| self.file.sync_data())
        {
            // Leave no half-written frame behind for the next append to follow.
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            return Err(e);
        }
        self.len += frames.len() as u64;
        Ok(())
    }

    /// Bytes in the log.
    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    /// Where the log lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Make a newly created file's directory entry durable too (best effort: not every
/// platform lets a directory be opened for syncing).
fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(dir);
    }
}

/// Make a directory's entries (created, renamed, removed files) durable, as far as the
/// platform lets a directory be synced.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ww-wal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn replay(path: &Path) -> (Vec<Vec<u8>>, Recovery, Wal) {
        let mut records = Vec::new();
        let (wal, recovery) = Wal::open(path, |r| {
            records.push(r.to_vec());
            Ok(())
        })
        .unwrap();
        (records, recovery, wal)
    }

    fn record(i: usize) -> Vec<u8> {
        format!("record {i}: {}", "x".repeat(i % 37)).into_bytes()
    }

    #[test]
    fn records_come_back_in_order_after_reopening() {
        let path = temp_dir("order").join("log");
        let (records, recovery, mut wal) = replay(&path);
        assert!(records.is_empty());
        assert_eq!(recovery, Recovery::default());
        for i in 0..100 {
            wal.append(&record(i)).unwrap();
        }
        wal.append_all(&[b"batch a", b"", b"batch c"]).unwrap();
        drop(wal);
        let (records, recovery, _) = replay(&path);
        let mut expected: Vec<Vec<u8>> = (0..100).map(record).collect();
        expected.extend([b"batch a".to_vec(), Vec::new(), b"batch c".to_vec()]);
        assert_eq!(records, expected);
        assert_eq!(recovery.records, 103);
        assert_eq!(recovery.dropped_bytes, 0);
    }

    #[test]
    fn a_torn_tail_is_cut_at_every_possible_point_and_nothing_before_it_is_lost() {
        let dir = temp_dir("torn");
        let path = dir.join("log");
        let (_, _, mut wal) = replay(&path);
        for i in 0..5 {
            wal.append(&record(i)).unwrap();
        }
        let intact = wal.len_bytes();
        wal.append(b"the record a crash tears").unwrap();
        let full = std::fs::read(&path).unwrap();
        drop(wal);
        for cut in intact + 1..full.len() as u64 {
            std::fs::write(&path, &full[..cut as usize]).unwrap();
            let (records, recovery, mut wal) = replay(&path);
            assert_eq!(
                records,
                (0..5).map(record).collect::<Vec<_>>(),
                "cut at {cut}"
            );
            assert_eq!(recovery.dropped_bytes, cut - intact, "cut at {cut}");
            assert!(
                recovery
                    .reason
                    .as_deref()
                    .unwrap()
                    .contains(&format!("offset {intact}"))
            );
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                intact,
                "file cut back"
            );
            // The log goes on cleanly after recovery.
            wal.append(b"after").unwrap();
            drop(wal);
            let (records, recovery, _) = replay(&path);
            assert_eq!(records.last().unwrap(), b"after");
            assert_eq!(recovery.dropped_bytes, 0);
        }
    }

    #[test]
    fn a_checksum_mismatch_or_absurd_length_ends_the_log_there() {
        let path = temp_dir("corrupt").join("log");
        let (_, _, mut wal) = replay(&path);
        wal.append(b"first").unwrap();
        wal.append(b"second").unwrap();
        drop(wal);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (records, recovery, _) = replay(&path);
        assert_eq!(records, vec![b"first".to_vec()]);
        assert!(recovery.reason.unwrap().contains("checksum"));

        let mut garbage = std::fs::read(&path).unwrap();
        garbage.extend_from_slice(&u32::MAX.to_le_bytes());
        garbage.extend_from_slice(&[0; 12]);
        std::fs::write(&path, &garbage).unwrap();
        let (records, recovery, _) = replay(&path);
        assert_eq!(records, vec![b"first".to_vec()]);
        assert_eq!(recovery.dropped_bytes, 16);
        assert!(recovery.reason.unwrap().contains("claiming"));
    }

    #[test]
    fn an_apply_error_stops_replay_and_leaves_the_file_alone() {
        let path = temp_dir("apply").join("log");
        let (_, _, mut wal) = replay(&path);
        wal.append(b"one").unwrap();
        wal.append(b"two").unwrap();
        let len = wal.len_bytes();
        drop(wal);
        let error = Wal::open(&path, |r| {
            if r == b"two" {
                Err(io::Error::other("cannot apply"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(error.to_string(), "cannot apply");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    }

    #[test]
    fn oversized_records_are_refused_before_anything_is_written() {
        let path = temp_dir("oversized").join("log");
        let (_, _, mut wal) = replay(&path);
        let huge = vec![0_u8; MAX_RECORD_BYTES + 1];
        assert_eq!(
            wal.append(&huge).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(wal.len_bytes(), 0);
        wal.append(b"fine").unwrap();
        drop(wal);
        assert_eq!(replay(&path).0, vec![b"fine".to_vec()]);
    }
}
