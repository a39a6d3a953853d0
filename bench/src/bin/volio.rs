//! `volio`: the I/O load of the `volumes` benchmark, run inside a container (busybox's `dd` has
//! neither O_DIRECT nor random offsets) and on the host alike, so both sides run the same code.
//!
//! ```text
//! volio MODE FILE MIB [OPS]
//!   seq-write   FILE (re)written with MIB MiB in 1 MiB blocks, O_DIRECT, then one fsync (timed)
//!   seq-read    the first MIB MiB of FILE in 1 MiB blocks, O_DIRECT
//!   rand-write  OPS 4 KiB writes at random 4 KiB-aligned offsets in the first MIB MiB,
//!               O_DIRECT|O_DSYNC: each write is durable when it returns (a database's commit)
//!   rand-read   OPS 4 KiB reads at random offsets in the first MIB MiB, O_DIRECT
//! ```
//!
//! One request at a time (queue depth 1). Prints one JSON line: mode, block size, ops, bytes,
//! seconds, MiB/s, IOPS and what made the writes durable. The random modes need FILE to hold MIB
//! MiB already (a seq-write first). The offsets come from a fixed seed, so every run and both
//! sides touch the same blocks.
//!
//! It uses std alone so that the bench compiles it static for the guest with `rustc` in
//! seconds, without building the bench crate's dependencies for the static target.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::Instant;

/// Linux's open(2) flags on x86_64 (the only target Hyper's guests run).
const O_DIRECT: i32 = 0o40000;
const O_DSYNC: i32 = 0o10000;

const SEQ_BLOCK: usize = 1 << 20;
const RAND_BLOCK: usize = 4096;
/// O_DIRECT needs buffers, offsets and lengths aligned to the device's logical block; 4 KiB
/// covers every disk here.
const ALIGN: usize = 4096;

struct Job {
    mode: String,
    file: String,
    mib: u64,
    ops: u64,
}

struct Outcome {
    block: usize,
    ops: u64,
    secs: f64,
    durable: &'static str,
}

fn usage() -> ! {
    eprintln!("usage: volio seq-write|seq-read|rand-write|rand-read FILE MIB [OPS]");
    std::process::exit(2)
}

fn parse() -> Job {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 3 {
        usage();
    }
    let number = |s: &str| s.parse::<u64>().unwrap_or_else(|_| usage());
    Job {
        mode: a[0].clone(),
        file: a[1].clone(),
        mib: number(&a[2]),
        ops: a.get(3).map_or(0, |s| number(s)),
    }
}

/// A buffer of `len` bytes aligned to [`ALIGN`], carved out of a larger Vec (no unsafe), full
/// of non-zero bytes so that nothing on the way can skip them as zeros.
fn aligned(storage: &mut Vec<u8>, len: usize) -> &mut [u8] {
    *storage = (0..len + ALIGN).map(|i| (i % 251 + 1) as u8).collect();
    let off = storage.as_ptr().align_offset(ALIGN);
    &mut storage[off..off + len]
}

/// xorshift64*: offsets that are random enough to defeat read-ahead, and the same every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn open(path: &str, write: bool, flags: i32) -> std::io::Result<File> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(O_DIRECT | flags)
        .open(path)
}

fn seq_write(j: &Job) -> std::io::Result<Outcome> {
    let mut storage = Vec::new();
    let buf = aligned(&mut storage, SEQ_BLOCK);
    let t = Instant::now();
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(O_DIRECT)
        .open(&j.file)?;
    for _ in 0..j.mib {
        f.write_all(buf)?;
    }
    f.sync_all()?;
    Ok(Outcome {
        block: SEQ_BLOCK,
        ops: j.mib,
        secs: t.elapsed().as_secs_f64(),
        durable: "fsync at the end",
    })
}

fn seq_read(j: &Job) -> std::io::Result<Outcome> {
    let mut storage = Vec::new();
    let buf = aligned(&mut storage, SEQ_BLOCK);
    let t = Instant::now();
    let mut f = open(&j.file, false, 0)?;
    for _ in 0..j.mib {
        f.read_exact(buf)?;
    }
    Ok(Outcome {
        block: SEQ_BLOCK,
        ops: j.mib,
        secs: t.elapsed().as_secs_f64(),
        durable: "-",
    })
}

fn random(j: &Job, write: bool) -> std::io::Result<Outcome> {
    let f = open(&j.file, write, if write { O_DSYNC } else { 0 })?;
    let blocks = (j.mib << 20) / RAND_BLOCK as u64;
    let have = f.metadata()?.len() / RAND_BLOCK as u64;
    if j.ops == 0 || blocks == 0 || have < blocks {
        eprintln!(
            "volio: {} needs OPS > 0 and a file of {} MiB (a seq-write first)",
            j.mode, j.mib
        );
        std::process::exit(2);
    }
    let mut storage = Vec::new();
    let buf = aligned(&mut storage, RAND_BLOCK);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t = Instant::now();
    for _ in 0..j.ops {
        let at = rng.below(blocks) * RAND_BLOCK as u64;
        if write {
            f.write_all_at(buf, at)?;
        } else {
            f.read_exact_at(buf, at)?;
        }
    }
    Ok(Outcome {
        block: RAND_BLOCK,
        ops: j.ops,
        secs: t.elapsed().as_secs_f64(),
        durable: if write { "O_DSYNC, every write" } else { "-" },
    })
}

fn main() {
    let j = parse();
    let done = match j.mode.as_str() {
        "seq-write" => seq_write(&j),
        "seq-read" => seq_read(&j),
        "rand-write" => random(&j, true),
        "rand-read" => random(&j, false),
        _ => usage(),
    };
    let o = done.unwrap_or_else(|e| {
        eprintln!("volio {} {}: {e}", j.mode, j.file);
        std::process::exit(1)
    });
    let bytes = o.ops * o.block as u64;
    println!(
        r#"{{"mode":"{}","block":{},"ops":{},"bytes":{bytes},"secs":{:.6},"mib_s":{:.3},"iops":{:.1},"durable":"{}"}}"#,
        j.mode,
        o.block,
        o.ops,
        o.secs,
        bytes as f64 / f64::from(1 << 20) / o.secs,
        o.ops as f64 / o.secs,
        o.durable
    );
}
