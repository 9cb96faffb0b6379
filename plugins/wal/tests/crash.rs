//! A writer process killed with SIGKILL mid-stream loses no acknowledged record.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use ww_wal::Wal;

/// Set in the child: the log to write to.
const CHILD_LOG: &str = "WW_WAL_CRASH_CHILD_LOG";

fn payload(i: u64) -> Vec<u8> {
    format!("acknowledged write {i} {}", "p".repeat((i % 200) as usize)).into_bytes()
}

/// The child's side: append forever, saying after each append that it is durable.
/// Does nothing unless started by the parent test below.
#[test]
fn crash_child_writer() {
    let Some(path) = std::env::var_os(CHILD_LOG) else {
        return;
    };
    let (mut wal, _) = Wal::open(&PathBuf::from(path), |_| Ok(())).expect("open");
    let stdout = std::io::stdout();
    for i in 0.. {
        wal.append(&payload(i)).expect("append");
        let mut out = stdout.lock();
        writeln!(out, "acked {i}").expect("stdout");
        out.flush().expect("flush");
    }
}

#[test]
fn every_acknowledged_write_survives_kill_9() {
    let dir = std::env::temp_dir().join(format!("ww-wal-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("log");

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_LOG, &log)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the writer");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = None;
    for line in lines {
        if let Some(n) = line.unwrap().strip_prefix("acked ") {
            let n: u64 = n.parse().unwrap();
            acked = Some(n);
            if n >= 300 {
                break;
            }
        }
    }
    // SIGKILL while it keeps writing: no destructor, no flush, no warning.
    child.kill().expect("kill -9");
    child.wait().unwrap();
    let acked = acked.expect("the writer acknowledged writes");

    let mut records = Vec::new();
    let (_, recovery) = Wal::open(&log, |r| {
        records.push(r.to_vec());
        Ok(())
    })
    .unwrap();
    assert!(
        records.len() as u64 > acked,
        "{} records, {acked} acknowledged",
        records.len()
    );
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record, &payload(i as u64), "record {i}");
    }
    // Whatever the kill tore (if anything) was cut, and only after the last record.
    assert_eq!(recovery.records, records.len() as u64);
    std::fs::remove_dir_all(&dir).unwrap();
}
