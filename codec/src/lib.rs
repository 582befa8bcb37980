pub mod error;
pub mod oer;

pub use error::DecodeError;
