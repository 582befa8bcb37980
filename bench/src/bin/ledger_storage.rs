//! Which storage for the durable ledger: our journal of fixed-size records,
//! or an embedded engine (redb, fjall)? One workload for every engine:
//!
//! - N packets in batches of B per "loop turn"; each turn records the
//!   Forward of its B new packets and the outcome of the previous turn's
//!   packets (90% fulfilled, 10% unwound; a fulfilled packet moves two
//!   balances), then commits once;
//! - `--durability fsync`: each commit is made durable with fdatasync (or
//!   the engine's equivalent); `fsync-wait` (journal only) makes the turn
//!   wait for it; `os`: no sync.
//!
//! The write phase runs in a child process that exits without closing the
//! store (a crash); the parent then drops the files from the page cache and
//! times recovery (balances + open packets), checks the result against the
//! workload, and prints a markdown table row. Run:
//!
//! ```text
//! cargo run --release -p ilpd-bench --bin ledger_storage -- \
//!     --packets 2000000 --batch 256 --durability fsync --engine journal
//! ```

use std::error::Error;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use ilpd_engine::ledger::format::{self, Checkpoint, Entry, Forward, Kind};
use ilpd_engine::ledger::fs::{FsDir, LogDir};
use ilpd_engine::ledger::replay::DoubtKind;
use ilpd_engine::ledger::sync::{Syncer, WorkerLog};
use ilpd_engine::ledger::writer::Writer;
use ilpd_engine::ledger::{datadir, Durability, LedgerStatus};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;
/// What recovery read: the balances, the open packets, and the store
/// (closed after the clock stopped).
type Recovered = (Vec<i64>, usize, Box<dyn std::any::Any>);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Engine {
    Journal,
    Redb,
    Fjall,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// fdatasync per commit (the journal: group commit, pipelined).
    Fsync,
    /// Journal only: fsync, but each turn waits until its frame is durable.
    FsyncWait,
    /// No sync: written to the kernel (redb: not even that, see below).
    Os,
}

#[derive(Parser, Debug)]
#[command(about = "The ledger's storage: our journal against redb and fjall")]
struct Args {
    #[arg(long, value_enum, default_value = "journal")]
    engine: Engine,
    #[arg(long, value_enum, default_value = "fsync")]
    durability: Mode,
    #[arg(long, default_value_t = 2_000_000)]
    packets: u64,
    #[arg(long, default_value_t = 256)]
    batch: u64,
    #[arg(long, default_value_t = 16)]
    accounts: u32,
    /// A new directory for the files (removed at the end); default
    /// /work/ledger-bench-PID.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the table header before the row.
    #[arg(long)]
    header: bool,
    /// Internal: run the write phase in `dir` and exit without closing.
    #[arg(long, hide = true)]
    child: bool,
}

/// The workload's random numbers (xorshift64*): the same for every engine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// One storage engine under the workload.
trait Store {
    /// One loop turn, one commit: this turn's new packets, the previous
    /// turn's outcomes (id, fulfilled) and every balance after them.
    fn turn(&mut self, new: &[Forward], ended: &[(u32, bool)], balances: &[i64]) -> Res<()>;
    /// Waits until everything is durable; the fdatasync count and time if known.
    fn finish(&mut self) -> Res<Option<(u64, u64)>> {
        Ok(None)
    }
}

/// Runs the workload into `store` (without `finish`): the final balances,
/// the packets still open (the last turn's), and the number of turns.
/// Without a store: the expected result.
fn run(args: &Args, mut store: Option<&mut dyn Store>) -> Res<(Vec<i64>, usize, u64)> {
    let (mut rng, accounts) = (Rng(0x9E37_79B9_7F4A_7C15), args.accounts.max(2) as u64);
    let mut balances = vec![0i64; accounts as usize];
    let (mut prev, mut new, mut ended): (Vec<Forward>, _, _) = (Vec::new(), Vec::new(), Vec::new());
    let (mut left, mut turns, mut id) = (args.packets, 0, 0u32);
    while left > 0 {
        let n = left.min(args.batch.max(1));
        left -= n;
        let now = unix_ms();
        new.clear();
        for _ in 0..n {
            let r = rng.next();
            let from = r % accounts;
            let in_amount = 1_000 + rng.next() % 9_000;
            let mut condition = [0; 32];
            for c in condition.chunks_mut(8) {
                c.copy_from_slice(&rng.next().to_le_bytes());
            }
            id = id.wrapping_add(1);
            new.push(Forward {
                id,
                from: from as u32,
                to: ((from + 1 + (r >> 32) % (accounts - 1)) % accounts) as u32,
                in_amount,
                out_amount: in_amount - in_amount / 100,
                expires_ms: now + 30_000,
                condition,
            });
        }
        ended.clear();
        for f in prev.drain(..) {
            let fulfilled = !rng.next().is_multiple_of(10);
            if fulfilled {
                balances[f.from as usize] += f.in_amount as i64;
                balances[f.to as usize] -= f.out_amount as i64;
            }
            ended.push((f.id, fulfilled));
        }
        if let Some(s) = store.as_deref_mut() {
            s.turn(&new, &ended, &balances)?;
        }
        std::mem::swap(&mut prev, &mut new);
        turns += 1;
    }
    Ok((balances, prev.len(), turns))
}

/// Ours: ilpd_engine::ledger's real Writer (one worker, one segment file of
/// checksummed frames, one frame per turn) and, with fsync, its Syncer
/// thread doing group commit with fdatasync while the turns go on. Like
/// the core, each frame also carries a Released mark (Fulfills of frames up
/// to the durable seq were passed on), so recovery does not list every
/// fulfilled packet as in doubt. No segment rollover: recovery replays
/// every record (in ilpd, segments of 64 MiB with checkpoints bound it).
struct JournalStore {
    writer: Writer,
    log: Arc<WorkerLog>,
    syncer: Option<(Arc<Syncer>, JoinHandle<()>)>,
    wait: bool,
    frame: Vec<u8>,
    seq: u64,
    released: u64,
}

impl JournalStore {
    fn open(dir: &Path, accounts: u32, mode: Mode) -> Res<JournalStore> {
        let jdir = dir.join(datadir::JOURNAL);
        fs::create_dir_all(&jdir)?;
        let fsdir: Arc<dyn LogDir> = Arc::new(FsDir::new(&jdir));
        let log = Arc::new(WorkerLog::default());
        let main = std::thread::current();
        log.set_notify(Box::new(move || main.unpark()));
        let (durability, syncer) = if mode == Mode::Os {
            (Durability::Os, None)
        } else {
            let s = Arc::new(Syncer::new(vec![log.clone()], fsdir.clone()));
            let s2 = s.clone();
            let h = std::thread::spawn(move || s2.run(&LedgerStatus::default()));
            (Durability::Fsync, Some((s, h)))
        };
        let cp = Checkpoint {
            accounts: (0..accounts as usize)
                .map(|i| (format!("acct{i:03}"), 0))
                .collect(),
            ..Checkpoint::default()
        };
        let mut frame = Vec::with_capacity(64 * 1024);
        format::begin_frame(&mut frame, Kind::Checkpoint, 1, unix_ms());
        cp.put(&mut frame);
        format::finish_frame(&mut frame);
        let writer = Writer::create(
            fsdir,
            log.clone(),
            syncer.as_ref().map(|s| s.0.clone()),
            durability,
            0,
            0,
            u64::MAX,
            (1, &frame),
        )?;
        Ok(JournalStore {
            writer,
            log,
            syncer,
            wait: mode == Mode::FsyncWait,
            frame,
            seq: 2,
            released: 0,
        })
    }
}

impl Store for JournalStore {
    fn turn(&mut self, new: &[Forward], ended: &[(u32, bool)], _: &[i64]) -> Res<()> {
        format::begin_frame(&mut self.frame, Kind::Batch, self.seq, unix_ms());
        for f in new {
            format::put_forward(&mut self.frame, f);
        }
        for &(id, fulfilled) in ended {
            if fulfilled {
                format::put_fulfilled(&mut self.frame, id);
            } else {
                format::put_unwound(&mut self.frame, id);
            }
        }
        let durable = self.writer.durable();
        if durable > self.released {
            format::put_released(&mut self.frame, durable);
            self.released = durable;
        }
        format::finish_frame(&mut self.frame);
        self.writer.append(self.seq, &self.frame)?;
        while self.wait && self.writer.durable() < self.seq {
            std::thread::park();
        }
        self.seq += 1;
        Ok(())
    }

    fn finish(&mut self) -> Res<Option<(u64, u64)>> {
        let Some((s, h)) = self.syncer.take() else {
            return Ok(None);
        };
        s.stop();
        h.join().map_err(|_| "the syncer thread panicked")?;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Ok(Some((get(&self.log.syncs), get(&self.log.sync_ns))))
    }
}

/// redb (a copy-on-write B-tree): table `open` (packet id → its 69-byte
/// Forward record, inserted when forwarded, removed when it ends) and
/// `balances` (account → balance, every account rewritten each turn); one
/// write transaction per turn. fsync: Durability::Immediate (the commit
/// waits for its fsync). os: Durability::None, which redb does not even
/// promise to keep over a process crash, plus one Immediate commit at the end.
struct RedbStore {
    db: redb::Database,
    durability: redb::Durability,
    rec: Vec<u8>,
}

const OPEN: TableDefinition<u32, &[u8]> = TableDefinition::new("open");
const BALANCES: TableDefinition<u32, i64> = TableDefinition::new("balances");

impl Store for RedbStore {
    fn turn(&mut self, new: &[Forward], ended: &[(u32, bool)], balances: &[i64]) -> Res<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(self.durability)?;
        {
            let mut open = tx.open_table(OPEN)?;
            for f in new {
                self.rec.clear();
                format::put_forward(&mut self.rec, f);
                open.insert(f.id, self.rec.as_slice())?;
            }
            for &(id, _) in ended {
                open.remove(id)?;
            }
            let mut b = tx.open_table(BALANCES)?;
            for (i, v) in balances.iter().enumerate() {
                b.insert(i as u32, v)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn finish(&mut self) -> Res<Option<(u64, u64)>> {
        if matches!(self.durability, redb::Durability::None) {
            let mut tx = self.db.begin_write()?;
            tx.set_durability(redb::Durability::Immediate)?;
            tx.commit()?;
        }
        Ok(None)
    }
}

/// Set when redb had to repair the file (it was not closed cleanly).
static REDB_REPAIRED: AtomicBool = AtomicBool::new(false);

/// Recovery: open the database (after a crash redb repairs it) and read
/// every balance and open packet.
fn redb_recover(dir: &Path) -> Res<Recovered> {
    let db = redb::Database::builder()
        .set_repair_callback(|_| REDB_REPAIRED.store(true, Ordering::Relaxed))
        .open(dir.join("ledger.redb"))?;
    let tx = db.begin_read()?;
    let mut balances = Vec::new();
    for kv in tx.open_table(BALANCES)?.iter()? {
        balances.push(kv?.1.value());
    }
    let mut open = 0;
    for kv in tx.open_table(OPEN)?.iter()? {
        let (_, v) = kv?;
        if let Some(Ok(Entry::Forward(_))) = format::entries(v.value()).next() {
            open += 1;
        }
    }
    drop(tx);
    Ok((balances, open, Box::new(db)))
}

/// fjall (an LSM tree with its own write-ahead journal): keyspaces `open`
/// and `balances` as for redb, one atomic WriteBatch per turn. fsync:
/// PersistMode::SyncData per batch; os: PersistMode::Buffer (to the kernel).
struct FjallStore {
    db: fjall::Database,
    open: fjall::Keyspace,
    balances: fjall::Keyspace,
    mode: fjall::PersistMode,
}

impl FjallStore {
    fn open(dir: &Path, mode: fjall::PersistMode) -> Res<FjallStore> {
        let db = fjall::Database::builder(dir.join("fjall")).open()?;
        let open = db.keyspace("open", fjall::KeyspaceCreateOptions::default)?;
        let balances = db.keyspace("balances", fjall::KeyspaceCreateOptions::default)?;
        Ok(FjallStore {
            db,
            open,
            balances,
            mode,
        })
    }
}

impl Store for FjallStore {
    fn turn(&mut self, new: &[Forward], ended: &[(u32, bool)], balances: &[i64]) -> Res<()> {
        let mut b = self.db.batch().durability(Some(self.mode));
        for f in new {
            let mut rec = Vec::with_capacity(1 + format::FORWARD_LEN);
            format::put_forward(&mut rec, f);
            b.insert(&self.open, f.id.to_be_bytes(), rec);
        }
        for &(id, _) in ended {
            b.remove(&self.open, id.to_be_bytes());
        }
        for (i, v) in balances.iter().enumerate() {
            b.insert(&self.balances, (i as u32).to_be_bytes(), v.to_le_bytes());
        }
        Ok(b.commit()?)
    }
}

/// Recovery: open the database (fjall replays its journal) and read it.
fn fjall_recover(dir: &Path) -> Res<Recovered> {
    let s = FjallStore::open(dir, fjall::PersistMode::Buffer)?;
    let mut balances = Vec::new();
    for kv in s.balances.iter() {
        let v = kv.value()?;
        balances.push(i64::from_le_bytes(v[..8].try_into()?));
    }
    let mut open = 0;
    for kv in s.open.iter() {
        if let Some(Ok(Entry::Forward(_))) = format::entries(&kv.value()?).next() {
            open += 1;
        }
    }
    Ok((balances, open, Box::new(s)))
}

/// Recovery: ilpd's own (datadir::read: read every segment, replay).
fn journal_recover(dir: &Path) -> Res<Recovered> {
    let r = datadir::read(dir).map_err(|e| e.to_string())?;
    let balances = r.balances.values().map(|b| *b as i64).collect();
    let open = r
        .in_doubt
        .iter()
        .filter(|d| d.kind == DoubtKind::OutcomeUnknown)
        .count();
    Ok((balances, open, Box::new(())))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// User + system CPU time of this process (every thread), in ns.
fn cpu_ns() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    ns(ru.ru_utime) + ns(ru.ru_stime)
}

/// (wchar, write_bytes) of /proc/self/io: bytes passed to write calls, and
/// bytes this process caused to be written to storage (pages dirtied).
fn io_bytes() -> (u64, u64) {
    let s = fs::read_to_string("/proc/self/io").unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
            .unwrap_or(0)
    };
    (get("wchar:"), get("write_bytes:"))
}

/// The bytes allocated to the files under `dir`; with `evict`, each file is
/// synced and dropped from the page cache (only ours), for a cold recovery.
fn disk_bytes(dir: &Path, evict: bool) -> Res<u64> {
    let mut sum = 0;
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let m = fs::metadata(&p)?;
        if m.is_dir() {
            sum += disk_bytes(&p, evict)?;
        } else if evict {
            let f = fs::File::open(&p)?;
            f.sync_all()?;
            // SAFETY: a plain syscall on a file descriptor we own.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
        sum += m.blocks() * 512;
    }
    Ok(sum)
}

/// The write phase (child process): prints one `RESULT` line, then exits
/// without closing the store, as a crash would.
fn child(args: &Args, dir: &Path) -> Res<()> {
    let os = args.durability == Mode::Os;
    let mut store: Box<dyn Store> = match args.engine {
        Engine::Journal => Box::new(JournalStore::open(dir, args.accounts, args.durability)?),
        _ if args.durability == Mode::FsyncWait => return Err("fsync-wait: journal only".into()),
        Engine::Redb => Box::new(RedbStore {
            db: redb::Database::create(dir.join("ledger.redb"))?,
            durability: [redb::Durability::Immediate, redb::Durability::None][os as usize],
            rec: Vec::new(),
        }),
        Engine::Fjall => {
            let mode = [fjall::PersistMode::SyncData, fjall::PersistMode::Buffer][os as usize];
            Box::new(FjallStore::open(dir, mode)?)
        }
    };
    let (cpu0, io0) = (cpu_ns(), io_bytes());
    let t = Instant::now();
    let (_, _, turns) = run(args, Some(&mut *store))?;
    let (syncs, sync_ns) = store.finish()?.unwrap_or((0, 0));
    let wall = t.elapsed().as_nanos() as u64;
    let (cpu, io) = (cpu_ns() - cpu0, io_bytes());
    println!(
        "RESULT {wall} {cpu} {} {} {turns} {syncs} {sync_ns}",
        io.0 - io0.0,
        io.1 - io0.1
    );
    std::process::exit(0)
}

/// Removes the benchmark directory however the parent ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn main() -> Res<()> {
    let args = Args::parse();
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/work/ledger-bench-{}", std::process::id())));
    if args.child {
        return child(&args, &dir);
    }
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_string();
    fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = TempDir(dir.clone());
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(std::env::args_os().skip(1)).arg("--child");
    if args.dir.is_none() {
        cmd.arg("--dir").arg(&dir);
    }
    let out = cmd.output()?;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), out.stderr);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
        return Err(format!("write phase: {}", String::from_utf8_lossy(&stderr)).into());
    };
    let v: Vec<u64> = line.split(' ').map(str::parse).collect::<Result<_, _>>()?;
    let [wall, cpu, wchar, write_bytes, turns, syncs, sync_ns] = v[..] else {
        return Err(format!("bad RESULT line {line:?}").into());
    };
    let disk = disk_bytes(&dir, true)?;

    // Recovery, cold (our files dropped from the page cache), then warm
    // (for redb and fjall, the second open follows a clean close).
    let recover = |dir: &Path| match args.engine {
        Engine::Journal => journal_recover(dir),
        Engine::Redb => redb_recover(dir),
        Engine::Fjall => fjall_recover(dir),
    };
    let t = Instant::now();
    let (b1, o1, store) = recover(&dir)?;
    let cold = t.elapsed();
    drop(store);
    let t = Instant::now();
    let (b2, o2, store) = recover(&dir)?;
    let warm = t.elapsed();
    drop(store);
    let t = Instant::now();
    let (balances, open, _) = run(&args, None)?;
    let workload = t.elapsed().as_nanos() as f64;
    let ok = (&b1, o1) == (&balances, open) && (&b2, o2) == (&b1, o1);
    drop(tmp);

    let n = args.packets.max(1) as f64;
    let secs = wall as f64 / 1e9;
    let each = sync_ns as f64 / 1e6 / syncs.max(1) as f64;
    let syncs = match syncs {
        0 => "-".to_string(),
        n => format!("{n} ({each:.2} ms each)"),
    };
    if args.header {
        println!("| engine | durability | packets | batch | load 1m | ns/packet | CPU ns/packet | of which workload ns/packet | bytes on disk/packet | wchar/packet | write_bytes/packet | commits/s | fdatasyncs | recovery cold ms | recovery warm ms | recovered |");
        println!("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|");
    }
    println!(
        "| {:?} | {:?} | {} | {} | {load} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} | {syncs} | {:.1} | {:.1} | {} |",
        args.engine,
        args.durability,
        args.packets,
        args.batch,
        wall as f64 / n,
        cpu as f64 / n,
        workload / n,
        disk as f64 / n,
        wchar as f64 / n,
        write_bytes as f64 / n,
        turns as f64 / secs,
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
        match (ok, REDB_REPAIRED.load(Ordering::Relaxed)) {
            (false, _) => "MISMATCH",
            (true, repaired) => ["ok", "ok (repaired)"][repaired as usize],
        },
    );
    match ok {
        true => Ok(()),
        false => Err(format!("recovered {b1:?}, {o1} open; expected {balances:?}, {open}").into()),
    }
}
