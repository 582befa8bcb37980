//! ilpd engine library.
