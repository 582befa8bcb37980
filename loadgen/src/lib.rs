//! ilp-loadgen: a load generator for any ILP connector, using the Loopback
//! Transport (it is both the sender and the receiver of its packets).
//!
//! - [`run::run`] drives a connector (or the generator itself, direct mode)
//!   and returns merged [`stats`]; [`report`] prints and writes them.
//! - [`stream::run`] makes real STREAM payments (ilpd-stream's sender) to an
//!   SPSP receiver through a connector, many at once.
//! - [`pay`] sends one-shot and chunked payments ([`chunked`] is the policy).
//! - [`sender`] and [`receiver`] are the two halves of the Loopback Transport;
//!   [`lt`] holds the rules they share.

pub mod chunked;
pub mod clock;
pub mod demo;
pub mod frames;
pub mod http_get;
pub mod link;
pub mod lsd;
pub mod lt;
pub mod pay;
pub mod receiver;
pub mod report;
pub mod run;
pub mod sender;
pub mod spsp;
pub mod stats;
pub mod stream;
pub mod sweep;
pub mod template;
pub mod timer;
pub mod track;
pub mod url;
