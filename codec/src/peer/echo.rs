//! Echo / ping data (docs/design.md "Echo", ilp-connector `middlewares/echo.ts`):
//! a Prepare to the connector's own address whose data starts with
//! `ECHOECHOECHOECHO` asks it to send a pong back to the source address.

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, Result};
use crate::ilp::{Prepare, PrepareBuilder};
use crate::oer::{self, Reader};
use crate::types::Expiry;

/// The 16 ASCII bytes every echo payload starts with.
pub const ECHO_PREFIX: &[u8; 16] = b"ECHOECHOECHOECHO";

const TYPE_PING: u8 = 0;
const TYPE_PONG: u8 = 1;

/// A parsed echo payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoData<'a> {
    /// Answer with a pong Prepare to `source_address` (validated).
    Ping { source_address: &'a [u8] },
    /// A pong; a connector receiving one unasked answers F01.
    Pong,
}

/// True when `data` carries the echo prefix (the trigger, together with a
/// destination equal to our own address).
#[inline]
pub fn is_echo(data: &[u8]) -> bool {
    data.starts_with(ECHO_PREFIX)
}

/// Parses echo data: `prefix ‖ UInt8 type ‖ (ping: VarOctetString source)`.
/// Fewer than 17 bytes, a missing prefix, an unknown type or a bad source
/// address are errors (the engine answers F01). Bytes after the ping's
/// address are ignored, as ilp-connector does.
pub fn parse(data: &[u8]) -> Result<EchoData<'_>> {
    if data.len() < ECHO_PREFIX.len() + 1 {
        return Err(DecodeError::Truncated);
    }
    if !is_echo(data) {
        return Err(DecodeError::Invalid("echo prefix"));
    }
    let mut r = Reader::new(&data[ECHO_PREFIX.len()..]);
    match r.read_u8()? {
        TYPE_PING => {
            let source_address = r.read_var_octets()?;
            crate::address::validate(source_address)?;
            Ok(EchoData::Ping { source_address })
        }
        TYPE_PONG => Ok(EchoData::Pong),
        t => Err(DecodeError::UnknownType(t)),
    }
}

/// Bytes a ping with this source address takes.
pub fn ping_len(source_address: &[u8]) -> usize {
    ECHO_PREFIX.len() + 1 + oer::var_octets_len(source_address.len())
}

/// Writes ping data asking the receiver to answer at `source_address`.
pub fn write_ping<B: BufMut + ?Sized>(buf: &mut B, source_address: &[u8]) {
    buf.put_slice(ECHO_PREFIX);
    buf.put_u8(TYPE_PING);
    oer::put_var_octets(buf, source_address);
}

/// The pong data: prefix then type 1.
pub fn pong_data() -> [u8; 17] {
    let mut out = [TYPE_PONG; 17];
    out[..16].copy_from_slice(ECHO_PREFIX);
    out
}

/// A ping Prepare to `destination` (the connector's own address) asking
/// for a pong at `source_address`.
pub fn ping_prepare(
    destination: &[u8],
    amount: u64,
    execution_condition: &[u8; 32],
    expires_at: Expiry,
    source_address: &[u8],
) -> BytesMut {
    let mut data = BytesMut::with_capacity(ping_len(source_address));
    write_ping(&mut data, source_address);
    PrepareBuilder {
        amount,
        expires_at,
        execution_condition,
        destination,
        data: &data,
    }
    .build()
}

/// The pong Prepare answering `ping`: to `source_address`, same amount and
/// condition, data = pong (docs/design.md "Echo"). `expires_at` is the caller's
/// policy (ilp-connector v23 keeps the ping's and lets the pipeline shorten
/// it).
pub fn pong_prepare<T: AsRef<[u8]>>(
    ping: &Prepare<T>,
    source_address: &[u8],
    expires_at: Expiry,
) -> BytesMut {
    PrepareBuilder {
        amount: ping.amount(),
        expires_at,
        execution_condition: ping.execution_condition(),
        destination: source_address,
        data: &pong_data(),
    }
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_pong() {
        let mut buf = Vec::new();
        write_ping(&mut buf, b"test.alice");
        assert_eq!(buf.len(), ping_len(b"test.alice"));
        assert_eq!(
            parse(&buf),
            Ok(EchoData::Ping {
                source_address: b"test.alice"
            })
        );
        buf.extend_from_slice(b"trailer");
        assert!(parse(&buf).is_ok());
        assert_eq!(parse(&pong_data()), Ok(EchoData::Pong));
        assert_eq!(&pong_data()[..16], ECHO_PREFIX);
        assert_eq!(pong_data()[16], 1);
    }

    #[test]
    fn ping_then_pong_prepare() {
        let cond = [9u8; 32];
        let ping = ping_prepare(
            b"test.conn",
            10,
            &cond,
            Expiry(1_000_000),
            b"test.conn.alice",
        );
        let p = Prepare::new_checked(&ping[..]).expect("ping");
        assert_eq!(p.destination(), b"test.conn");
        let src = match parse(p.data()) {
            Ok(EchoData::Ping { source_address }) => source_address,
            other => panic!("{other:?}"),
        };
        assert_eq!(src, b"test.conn.alice");
        let pong = pong_prepare(&p, src, Expiry(999_000));
        let q = Prepare::new_checked(&pong[..]).expect("pong");
        assert_eq!(q.destination(), b"test.conn.alice");
        assert_eq!(q.amount(), 10);
        assert_eq!(q.execution_condition(), &cond);
        assert_eq!(q.expires_at(), Expiry(999_000));
        assert_eq!(parse(q.data()), Ok(EchoData::Pong));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse(ECHO_PREFIX), Err(DecodeError::Truncated));
        assert_eq!(
            parse(b"ECHOECHOECHOECHX\x01"),
            Err(DecodeError::Invalid("echo prefix"))
        );
        assert_eq!(
            parse(b"ECHOECHOECHOECHO\x02"),
            Err(DecodeError::UnknownType(2))
        );
        // Ping with no address, and with an invalid one.
        assert_eq!(parse(b"ECHOECHOECHOECHO\x00"), Err(DecodeError::Truncated));
        assert_eq!(
            parse(b"ECHOECHOECHOECHO\x00\x01g"),
            Err(DecodeError::BadAddress)
        );
        assert!(!is_echo(b"ECHO"));
    }
}
