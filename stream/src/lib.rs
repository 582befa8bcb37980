//! STREAM (RFC 29) and SPSP (RFC 9) without IO, after the style of
//! `ilpd-codec`: byte-level formats that never panic on input, and state
//! machines that take `now` and packets and return what to answer.
//!
//! - [`packet`]: the plaintext STREAM packet and its frames.
//! - [`crypto`]: the AES-256-GCM envelope and the fulfillment HMAC.
//! - [`receipt`]: STREAM receipts (RFC 39).
//! - [`spsp`]: connection details derived from one server secret, the
//!   SPSP response, payment pointers.
//! - [`receiver`]: a stateless-keyed STREAM receiver: Prepare in,
//!   Fulfill or Reject out.
//! - [`sender`]: a STREAM sender state machine for one payment.
//! - [`rng`]: where IVs and nonces come from.
//!
//! See docs/stream.md.
#![deny(unsafe_code)]

pub mod crypto;
pub mod packet;
pub mod receipt;
pub mod receiver;
pub mod rng;
pub mod sender;
pub mod spsp;

pub use crypto::ConnectionKeys;
pub use packet::{Frame, Packet, PacketBuilder, StreamErrorCode};
pub use receiver::{IncomingPrepare, Outcome, Receiver, ReceiverConfig};
pub use rng::{OsRandom, RandomSource};
pub use sender::{OutgoingPrepare, SendError, SendStats, Sender, SenderConfig};
pub use spsp::ServerSecret;
