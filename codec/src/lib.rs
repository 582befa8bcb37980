#![deny(unsafe_code)]
pub mod address;
pub mod btp;
pub mod error;
pub mod error_code;
pub mod ilp;
pub mod oer;
pub mod peer;
pub mod sha256;
pub mod time;
pub mod types;
pub mod ws;

pub use error::DecodeError;

pub use address::Address;
pub use error::Result;
pub use error_code::{ErrorClass, ErrorCode};
pub use ilp::{
    Fulfill, FulfillBuilder, Packet, PacketType, Prepare, PrepareBuilder, Reject, RejectBuilder,
};
pub use types::{AmountTooLarge, Condition, Expiry, Fulfillment};
