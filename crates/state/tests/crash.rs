//! Crash safety: a child process writes, commits and finalizes blocks and is killed with SIGKILL at
//! random moments; every reopen must yield exactly the last finalized block, checked against a
//! model, with nothing lost and nothing partial.
//!
//! The child is this test binary run again with `PEREGRINE_CRASH_CHILD` set (see `crash_child`).
//! It reports each finalized block on stdout once `finalize` has returned, so the parent knows the
//! last acknowledged block `k`; a kill can land after a finalize and before its report, so the
//! reopened block is `k` or `k + 1`, and its whole state must equal the model of that block.
//! Checkpoints and log switches are made frequent, so kills land in them too.
//!
//! Rounds: 6 in CI; `PEREGRINE_CRASH_ROUNDS` for more.

use peregrine_state::{Db, Options, RevisionId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HEIGHT_KEY: &[u8] = b"height";
const KEYS: u64 = 4_000;
const WRITES_PER_BLOCK: usize = 400;

fn options() -> Options {
    Options {
        checkpoint_bytes: 64 << 10,
        memory_budget: 256 << 10,
        compact_min_bytes: 0,
        ..Options::default()
    }
}

/// Block `b`'s writes: puts and deletes over a small key space, and the height.
fn block_writes(b: u64) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(b);
    let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..WRITES_PER_BLOCK)
        .map(|_| {
            let key = format!("key-{:05}", rng.gen_range(0..KEYS)).into_bytes();
            let value = rng
                .gen_bool(0.9)
                .then(|| vec![rng.gen(); rng.gen_range(1..48)]);
            (key, value)
        })
        .collect();
    writes.push((HEIGHT_KEY.to_vec(), Some(b.to_le_bytes().to_vec())));
    writes
}

fn height(db: &Db, rev: RevisionId) -> u64 {
    db.snapshot(rev)
        .expect("snapshot")
        .get(HEIGHT_KEY)
        .map_or(0, |v| {
            u64::from_le_bytes(v.as_slice().try_into().expect("8 bytes"))
        })
}

/// The child: continues the chain from its finalized height, finalizing two blocks behind the
/// head, with a side fork per block that is never finalized.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("PEREGRINE_CRASH_CHILD") else {
        return;
    };
    let db = Db::open_with(Path::new(&dir), options()).expect("child open");
    let mut pending = vec![db.finalized()];
    let mut b = height(&db, db.finalized());
    loop {
        b += 1;
        let head = *pending.last().expect("a head");
        let mut side = db.begin(head).expect("begin fork");
        side.put(b"fork".to_vec(), b.to_le_bytes().to_vec())
            .expect("put");
        db.commit(side).expect("commit fork");
        let mut ws = db.begin(head).expect("begin");
        for (key, value) in block_writes(b) {
            match value {
                Some(value) => ws.put(key, value).expect("put"),
                None => ws.delete(key).expect("delete"),
            }
        }
        pending.push(db.commit(ws).expect("commit"));
        if pending.len() > 3 {
            let finalize = pending.remove(1);
            db.finalize(finalize).expect("finalize");
            println!("{}", height(&db, finalize));
        }
    }
}

fn model_at(height: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for b in 1..=height {
        for (key, value) in block_writes(b) {
            match value {
                Some(value) => model.insert(key, value),
                None => model.remove(&key),
            };
        }
    }
    model
}

/// Kills the child after `delay` and returns the last height it acknowledged.
fn run_child(dir: &Path, delay: Duration) -> u64 {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("PEREGRINE_CRASH_CHILD", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(h) = line.trim().parse::<u64>() {
                let _ = tx.send(h);
            }
        }
    });
    let started = Instant::now();
    let mut acknowledged = 0;
    while started.elapsed() < delay {
        if let Ok(h) = rx.recv_timeout(Duration::from_millis(1)) {
            acknowledged = h;
        }
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    reader.join().expect("stdout reader");
    acknowledged.max(rx.try_iter().last().unwrap_or(0))
}

#[test]
fn sigkill_at_random_moments_loses_nothing_finalized() {
    let rounds: u64 = std::env::var("PEREGRINE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut last = 0;
    for round in 0..rounds {
        let delay = Duration::from_millis(rng.gen_range(150..900));
        let acknowledged = run_child(dir.path(), delay);
        let started = Instant::now();
        let db = Db::open_with(dir.path(), options()).expect("reopen after SIGKILL");
        let reopen = started.elapsed();
        let finalized = db.finalized();
        let h = height(&db, finalized);
        assert!(
            h == acknowledged || h == acknowledged + 1,
            "round {round}: reopened at height {h}, the child acknowledged {acknowledged}"
        );
        assert!(h >= last, "round {round}: went back from {last} to {h}");
        let snapshot = db.snapshot(finalized).expect("snapshot");
        let got: BTreeMap<Vec<u8>, Vec<u8>> = snapshot
            .range::<std::ops::RangeFull>(..)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        let model = model_at(h);
        assert!(
            got == model,
            "round {round}: state at height {h} differs from the model"
        );
        assert_eq!(snapshot.get(b"fork"), None, "an unfinalized fork leaked");
        let fresh_dir = tempfile::tempdir().expect("tempdir");
        let fresh = Db::open(fresh_dir.path()).expect("open");
        let mut ws = fresh.begin(fresh.finalized()).expect("begin");
        ws.put_sorted(model.into_iter().collect()).expect("put");
        let rev = fresh.commit(ws).expect("commit");
        assert_eq!(
            snapshot.commitment(),
            fresh.snapshot(rev).expect("snapshot").commitment(),
            "round {round}: commitment after recovery"
        );
        eprintln!("round {round}: killed after {delay:?}, acknowledged {acknowledged}, reopened at {h} in {reopen:?}");
        last = h;
    }
    assert!(last > 0, "the child never finalized a block");
}

/// The child of the I/O error test: finalizes blocks until a write fails (the file size limit its
/// shell set), then checks that the database refuses writes, and reports the last finalized
/// height.
#[test]
fn io_error_child() {
    let Ok(dir) = std::env::var("PEREGRINE_IO_ERROR_CHILD") else {
        return;
    };
    // Without compaction, so the node file grows until it reaches the size limit (compaction
    // would keep it below the limit, and the child would never fail).
    let options = Options {
        compact_min_bytes: u64::MAX,
        ..options()
    };
    let db = Db::open_with(Path::new(&dir), options).expect("child open");
    let mut head = db.finalized();
    let mut finalized = 0;
    for b in 1.. {
        // A failed checkpoint is reported by the next write: here.
        let mut ws = match db.begin(head) {
            Ok(ws) => ws,
            Err(error) => {
                println!("\nchild-error {error}");
                break;
            }
        };
        for (key, value) in block_writes(b) {
            match value {
                Some(value) => ws.put(key, value).expect("put"),
                None => ws.delete(key).expect("delete"),
            }
        }
        head = db.commit(ws).expect("commit");
        match db.finalize(head) {
            Ok(()) => finalized = b,
            Err(error) => {
                println!("\nchild-error {error}");
                break;
            }
        }
    }
    let refused = matches!(db.begin(head), Err(peregrine_state::Error::Poisoned(_)))
        && matches!(db.finalize(head), Err(peregrine_state::Error::Poisoned(_)));
    println!("\nchild-refused {refused}");
    println!("\nchild-finalized {finalized}");
}

/// A write that fails (the file size limit is reached) poisons the database, and what was
/// finalized before the failure reopens intact.
#[test]
fn an_io_error_poisons_writes_and_keeps_what_was_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    // `ulimit -f` in 1 KiB blocks: the log fails after a few dozen blocks. SIGXFSZ is ignored so
    // the write returns EFBIG instead of killing the child.
    let script = format!(
        "trap '' XFSZ; ulimit -f 600; exec '{}' --exact io_error_child --nocapture --test-threads=1",
        exe.display()
    );
    let output = Command::new("bash")
        .args(["-c", &script])
        .env("PEREGRINE_IO_ERROR_CHILD", dir.path())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("child printed no {name:?}: {stdout}"))
            .to_string()
    };
    let error = field("child-error ");
    assert!(
        error.contains("state log") || error.contains("node file") || error.contains("refuses"),
        "the error names what failed: {error}"
    );
    assert_eq!(
        field("child-refused "),
        "true",
        "writes after the error are refused"
    );
    let finalized: u64 = field("child-finalized ").parse().expect("a height");
    assert!(finalized > 0, "the limit left no room for a single block");
    let db = Db::open_with(dir.path(), options()).expect("reopen after the error");
    let snapshot = db.snapshot(db.finalized()).expect("snapshot");
    let h = height(&db, db.finalized());
    assert_eq!(h, finalized, "reopened at the last finalized height");
    let got: BTreeMap<Vec<u8>, Vec<u8>> = snapshot
        .range::<std::ops::RangeFull>(..)
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert!(
        got == model_at(h),
        "state after the error differs from the model"
    );
}
