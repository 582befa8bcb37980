//! Caps on accepted connections (issue 16): in total, per source IP, not
//! yet authenticated, and not yet authenticated per source IP, over every
//! listener (BTP and ILP-over-HTTP) of every worker. A connection past a
//! cap is closed at accept and counted. The last cap means one address
//! cannot fill the unauthenticated places by itself: it takes
//! `max_unauthenticated / max_unauthenticated_per_ip` addresses to keep new
//! peers out (until handshake deadlines free places), and established
//! connections are never touched.
//!
//! Each accepted connection holds an [`Admission`]; dropping it gives its
//! share back, so the counts stay exact on every close path (the table
//! drops the connection, the admission goes with it). Outgoing
//! connections (our dials) are not counted: we chose to open them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` reached.
    Total,
    /// `max_connections_per_ip` reached for its address.
    PerIp,
    /// `max_unauthenticated` reached.
    Unauthenticated,
    /// `max_unauthenticated_per_ip` reached for its address.
    UnauthenticatedPerIp,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::Total,
        Refusal::PerIp,
        Refusal::Unauthenticated,
        Refusal::UnauthenticatedPerIp,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerIp => "max_connections_per_ip",
            Refusal::Unauthenticated => "max_unauthenticated",
            Refusal::UnauthenticatedPerIp => "max_unauthenticated_per_ip",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The caps and the live counts, shared by every worker. The per-IP map is
/// behind a mutex taken on accept and close only.
#[derive(Debug)]
pub struct ConnLimits {
    max_total: usize,
    max_per_ip: u32,
    max_unauth: usize,
    max_unauth_per_ip: u32,
    total: AtomicUsize,
    unauth: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, PerIp>>,
    refused: [AtomicU64; 4],
}

/// One address's open connections.
#[derive(Debug, Default, Clone, Copy)]
struct PerIp {
    total: u32,
    unauth: u32,
}

/// The caps, as configured.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub total: usize,
    pub per_ip: u32,
    pub unauthenticated: usize,
    pub unauthenticated_per_ip: u32,
}

impl ConnLimits {
    pub fn new(caps: Caps) -> ConnLimits {
        ConnLimits {
            max_total: caps.total,
            max_per_ip: caps.per_ip,
            max_unauth: caps.unauthenticated,
            max_unauth_per_ip: caps.unauthenticated_per_ip,
            total: AtomicUsize::new(0),
            unauth: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            refused: Default::default(),
        }
    }

    /// Admits a new connection from `ip`, or says which cap it is past
    /// (and counts the refusal).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Refusal> {
        let refusal = {
            let mut per_ip = self.per_ip.lock();
            let n = per_ip.get(&ip).copied().unwrap_or_default();
            if self.total.load(Ordering::Acquire) >= self.max_total {
                Some(Refusal::Total)
            } else if n.total >= self.max_per_ip {
                Some(Refusal::PerIp)
            } else if n.unauth >= self.max_unauth_per_ip {
                Some(Refusal::UnauthenticatedPerIp)
            } else if self.unauth.load(Ordering::Acquire) >= self.max_unauth {
                Some(Refusal::Unauthenticated)
            } else {
                per_ip.insert(
                    ip,
                    PerIp {
                        total: n.total + 1,
                        unauth: n.unauth + 1,
                    },
                );
                // Under the lock, so two accepts cannot both take the last
                // place.
                self.total.fetch_add(1, Ordering::AcqRel);
                self.unauth.fetch_add(1, Ordering::AcqRel);
                None
            }
        };
        match refusal {
            Some(r) => {
                self.refused[r.index()].fetch_add(1, Ordering::Relaxed);
                Err(r)
            }
            None => Ok(Admission {
                limits: self.clone(),
                ip,
                authenticated: false,
            }),
        }
    }

    /// Connections open now (accepted ones), and of those not yet
    /// authenticated.
    pub fn open(&self) -> (usize, usize) {
        (
            self.total.load(Ordering::Acquire),
            self.unauth.load(Ordering::Acquire),
        )
    }

    /// Connections refused at accept, by cap.
    pub fn refused(&self, r: Refusal) -> u64 {
        self.refused[r.index()].load(Ordering::Relaxed)
    }

    /// Addresses with a connection open (for tests and metrics).
    pub fn addresses(&self) -> usize {
        self.per_ip.lock().len()
    }

    fn authenticated(&self, ip: IpAddr) {
        let mut per_ip = self.per_ip.lock();
        if let Some(n) = per_ip.get_mut(&ip) {
            n.unauth = n.unauth.saturating_sub(1);
        }
        self.unauth.fetch_sub(1, Ordering::AcqRel);
    }

    fn release(&self, ip: IpAddr, authenticated: bool) {
        let mut per_ip = self.per_ip.lock();
        match per_ip.get_mut(&ip) {
            Some(n) if n.total > 1 => {
                n.total -= 1;
                if !authenticated {
                    n.unauth = n.unauth.saturating_sub(1);
                }
            }
            _ => {
                per_ip.remove(&ip);
            }
        }
        self.total.fetch_sub(1, Ordering::AcqRel);
        if !authenticated {
            self.unauth.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Logs a refusal at accept: the first, then at each power of two, so a
/// flood cannot flood the log too (the metric counts every one).
pub fn log_refusal(limits: &ConnLimits, cap: Refusal, peer: SocketAddr, listener: &str) {
    let n = limits.refused(cap);
    if n.is_power_of_two() {
        tracing::warn!(
            %peer,
            refused = n,
            "{listener} connection refused at accept: node.{} reached",
            cap.label()
        );
    }
}

/// One accepted connection's place under the caps; released on drop.
#[derive(Debug)]
pub struct Admission {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
    authenticated: bool,
}

impl Admission {
    /// The connection authenticated: it no longer counts as
    /// unauthenticated. Idempotent.
    pub fn authenticated(&mut self) {
        if !self.authenticated {
            self.authenticated = true;
            self.limits.authenticated(self.ip);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.limits.release(self.ip, self.authenticated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn each_cap_refuses_and_counts() {
        let l = Arc::new(ConnLimits::new(Caps {
            total: 5,
            per_ip: 3,
            unauthenticated: 3,
            unauthenticated_per_ip: 2,
        }));
        let a1 = l.admit(ip(1)).unwrap();
        let mut a2 = l.admit(ip(1)).unwrap();
        assert_eq!(l.admit(ip(1)).unwrap_err(), Refusal::UnauthenticatedPerIp);
        a2.authenticated();
        let a2b = l.admit(ip(1)).unwrap();
        assert_eq!(l.admit(ip(1)).unwrap_err(), Refusal::PerIp);
        let a3 = l.admit(ip(2)).unwrap();
        // Three unauthenticated: the next is refused until one authenticates.
        assert_eq!(l.admit(ip(3)).unwrap_err(), Refusal::Unauthenticated);
        let mut a1 = a1;
        a1.authenticated();
        a1.authenticated();
        assert_eq!(l.open(), (4, 2));
        let a4 = l.admit(ip(3)).unwrap();
        assert_eq!(l.admit(ip(4)).unwrap_err(), Refusal::Total);
        for r in Refusal::ALL {
            assert_eq!(l.refused(r), 1, "{r:?}");
        }
        drop((a1, a2, a2b, a3, a4));
        assert_eq!(l.open(), (0, 0));
        assert_eq!(l.addresses(), 0);
    }

    #[test]
    fn counts_stay_exact_under_churn_from_many_threads() {
        let l = Arc::new(ConnLimits::new(Caps {
            total: 1_000_000,
            per_ip: 1_000_000,
            unauthenticated: 1_000_000,
            unauthenticated_per_ip: 1_000_000,
        }));
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let l = l.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..20_000u32 {
                        let mut a = l.admit(ip((i % 7) as u8 + t * 10)).unwrap();
                        if i % 3 == 0 {
                            a.authenticated();
                        }
                        held.push(a);
                        if i % 5 != 0 {
                            held.swap_remove((i as usize * 31) % held.len());
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(l.open(), (0, 0));
        assert_eq!(l.addresses(), 0);
    }
}
