//! `ilpd ledger verify --data-dir DIR` and `ilpd ledger dump --data-dir DIR`:
//! offline checks of a data dir, for audits and bug reports. Both only
//! read; neither needs ilpd to be stopped (a running ilpd's last frame may
//! show as a torn tail).

use std::io::{self, Write};
use std::path::Path;

use super::datadir::{self, hex, OpenError};
use super::format::{self, Checkpoint, Entry, Kind, Read, Snapshot};
use super::replay::DoubtKind;

/// Prints per-account balances and what a start would recover; `Err` with
/// the message for damage (exit 2).
pub fn verify(path: &Path, out: &mut dyn Write) -> Result<(), OpenError> {
    let r = datadir::read(path)?;
    let w = |out: &mut dyn Write, s: String| {
        let _ = writeln!(out, "{s}");
    };
    w(
        out,
        format!(
            "data dir {}: snapshot generation {}, journal {} bytes, {} frames, {} entries",
            path.display(),
            r.generation,
            r.bytes,
            r.frames,
            r.entries
        ),
    );
    let width = r.balances.keys().map(String::len).max().unwrap_or(7).max(7);
    w(
        out,
        format!(
            "{:<width$}  balance (positive: the peer owes us)",
            "account"
        ),
    );
    for (name, b) in &r.balances {
        w(out, format!("{name:<width$}  {b}"));
    }
    for kind in [DoubtKind::OutcomeUnknown, DoubtKind::DeliveryUnknown] {
        let (n, amount) =
            r.in_doubt
                .iter()
                .filter(|d| d.kind == kind)
                .fold((0u64, 0u128), |(n, a), d| {
                    let amt = match kind {
                        DoubtKind::OutcomeUnknown => d.forward.out_amount,
                        DoubtKind::DeliveryUnknown => d.forward.in_amount,
                    };
                    (n + 1, a + amt as u128)
                });
        w(
            out,
            format!("in doubt ({}): {n} packets, amount {amount}", kind.as_str()),
        );
    }
    for t in &r.torn {
        w(
            out,
            format!(
                "torn tail: {} at offset {} ({} bytes; cut at the next start)",
                t.file, t.offset, t.len
            ),
        );
    }
    w(out, "ok".into());
    Ok(())
}

/// Prints every frame and entry of the snapshot and the journal.
pub fn dump(path: &Path, out: &mut dyn Write) -> io::Result<()> {
    let snap = path.join("snapshot");
    if let Ok(bytes) = std::fs::read(&snap) {
        match format::read_frame(&bytes) {
            Read::Frame(f, _) => match Snapshot::parse(&f) {
                Ok(s) => {
                    writeln!(
                        out,
                        "snapshot generation={} at_unix_ms={}",
                        s.generation, f.unix_ms
                    )?;
                    for (n, b) in &s.balances {
                        writeln!(out, "  balance account={n} balance={b}")?;
                    }
                }
                Err(e) => writeln!(out, "snapshot: damaged: {e}")?,
            },
            other => writeln!(out, "snapshot: damaged: {other:?}")?,
        }
    }
    let files = datadir::read_segments(&path.join(datadir::JOURNAL))
        .map_err(|e| io::Error::other(e.to_string()))?;
    for (name, bytes) in files {
        writeln!(out, "file {name} ({} bytes)", bytes.len())?;
        let mut names: Vec<String> = Vec::new();
        let mut off = 0;
        loop {
            match format::read_frame(&bytes[off..]) {
                Read::End => break,
                Read::Frame(f, n) => {
                    writeln!(
                        out,
                        "frame offset={off} seq={} kind={:?} at_unix_ms={} bytes={n}",
                        f.seq, f.kind, f.unix_ms
                    )?;
                    match f.kind {
                        Kind::Checkpoint => match Checkpoint::parse(f.payload) {
                            Ok(c) => {
                                writeln!(
                                    out,
                                    "  checkpoint worker={} segment={} released={} open={} unreleased={}",
                                    c.worker,
                                    c.segment,
                                    c.released,
                                    c.open.len(),
                                    c.unreleased.len()
                                )?;
                                for (i, (n, d)) in c.accounts.iter().enumerate() {
                                    writeln!(out, "  account index={i} id={n} delta={d}")?;
                                }
                                names = c.accounts.into_iter().map(|a| a.0).collect();
                                for fw in &c.open {
                                    dump_forward(out, "open", fw, &names)?;
                                }
                            }
                            Err(e) => writeln!(out, "  damaged checkpoint: {e}")?,
                        },
                        _ => {
                            for e in format::entries(f.payload) {
                                match e {
                                    Ok(Entry::Forward(fw)) => {
                                        dump_forward(out, "forward", &fw, &names)?
                                    }
                                    Ok(Entry::Fulfilled(id)) => {
                                        writeln!(out, "  fulfilled id={id}")?
                                    }
                                    Ok(Entry::Unwound(id)) => writeln!(out, "  unwound id={id}")?,
                                    Ok(Entry::Released(s)) => {
                                        writeln!(out, "  released through_seq={s}")?
                                    }
                                    Err(e) => writeln!(out, "  damaged entry: {e}")?,
                                }
                            }
                        }
                    }
                    off += n;
                }
                Read::Incomplete => {
                    writeln!(
                        out,
                        "offset={off}: incomplete frame ({} bytes): a torn tail",
                        bytes.len() - off
                    )?;
                    break;
                }
                Read::Bad(why) => {
                    writeln!(out, "offset={off}: bad frame: {why}")?;
                    break;
                }
            }
        }
    }
    Ok(())
}

fn dump_forward(
    out: &mut dyn Write,
    what: &str,
    f: &format::Forward,
    names: &[String],
) -> io::Result<()> {
    let name = |i: u32| {
        names
            .get(i as usize)
            .cloned()
            .unwrap_or_else(|| format!("#{i}"))
    };
    writeln!(
        out,
        "  {what} id={} from={} in={} to={} out={} expires_unix_ms={} condition={}",
        f.id,
        name(f.from),
        f.in_amount,
        name(f.to),
        f.out_amount,
        f.expires_ms,
        hex(&f.condition)
    )
}
