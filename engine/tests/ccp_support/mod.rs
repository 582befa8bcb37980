//! Helpers for the sans-IO CCP tests: build a [`Ccp`] from a short list of
//! accounts, make RouteUpdate / RouteControl payloads, read the Prepares a
//! `poll` returns. Virtual time only.
#![allow(dead_code)]

use bytes::BytesMut;
use ilpd_codec::address::Address;
use ilpd_codec::ilp::Prepare;
use ilpd_codec::peer::ccp::{Mode, Route, RouteControlRequest, RouteUpdateRequest};
use ilpd_codec::peer::{PEER_ROUTE_CONTROL, PEER_ROUTE_UPDATE};
use ilpd_engine::ccp::{Ccp, CcpConfig, Kind, NextHop, Outgoing, PeerSettings};
use ilpd_engine::config::Relation;
use ilpd_engine::core::AccountId;

pub const T0: u64 = 1_700_000_000_000;
pub const PEER_TABLE: [u8; 16] = [0x11; 16];

/// A node `address` with accounts (name, relation) in order; children get
/// `<address>.<name>` as fixed routes, like the engine does.
pub fn node(address: &str, accounts: &[(&str, Relation)]) -> Ccp {
    node_with(address, accounts, |_| {}, vec![])
}

pub fn node_with(
    address: &str,
    accounts: &[(&str, Relation)],
    tweak: impl FnOnce(&mut CcpConfig),
    statics: Vec<(&str, u32)>,
) -> Ccp {
    let addr = Address::new(address).expect("address");
    let mut cfg = CcpConfig::new(
        addr.clone(),
        ilpd_engine::ccp::new_table_id(address.as_bytes()),
    );
    cfg.broadcast_interval_ms = 1_000;
    cfg.hold_down_ms = 3_000;
    tweak(&mut cfg);
    let mut fixed = vec![(addr.clone(), NextHop::Local)];
    for (i, (name, rel)) in accounts.iter().enumerate() {
        if *rel == Relation::Child {
            fixed.push((
                addr.with_suffix(name).expect("child address"),
                NextHop::Account(AccountId(i as u32)),
            ));
        }
    }
    for (p, a) in statics {
        fixed.push((
            Address::new(p).expect("static"),
            NextHop::Account(AccountId(a)),
        ));
    }
    let peers = accounts
        .iter()
        .map(|(n, r)| PeerSettings::new(n, *r))
        .collect();
    Ccp::new(cfg, peers, fixed)
}

pub fn route<'a>(prefix: &'a str, path: &[&'a str]) -> Route<'a> {
    Route {
        prefix: prefix.as_bytes(),
        path: path.iter().map(|h| h.as_bytes()).collect(),
        auth: [9; 32],
        props: vec![],
    }
}

pub struct Upd<'a> {
    pub table: [u8; 16],
    pub from: u32,
    pub to: u32,
    pub hold: u32,
    pub speaker: &'a str,
    pub new: Vec<Route<'a>>,
    pub withdrawn: Vec<&'a str>,
}

impl<'a> Upd<'a> {
    pub fn new(from: u32, to: u32) -> Upd<'a> {
        Upd {
            table: PEER_TABLE,
            from,
            to,
            hold: 3_000,
            speaker: "test.peer",
            new: vec![],
            withdrawn: vec![],
        }
    }
    pub fn routes(mut self, r: Vec<Route<'a>>) -> Self {
        self.new = r;
        self
    }
    pub fn withdraw(mut self, w: Vec<&'a str>) -> Self {
        self.withdrawn = w;
        self
    }
    pub fn bytes(&self) -> Vec<u8> {
        let req = RouteUpdateRequest {
            routing_table_id: self.table,
            current_epoch_index: self.to,
            from_epoch_index: self.from,
            to_epoch_index: self.to,
            hold_down_time: self.hold,
            speaker: self.speaker.as_bytes(),
            new_routes: self.new.clone(),
            withdrawn_routes: self.withdrawn.iter().map(|w| w.as_bytes()).collect(),
        };
        let mut buf = Vec::new();
        req.write_to(&mut buf);
        buf
    }
}

pub fn control(mode: Mode, table: [u8; 16], epoch: u32) -> Vec<u8> {
    let req = RouteControlRequest {
        mode,
        last_known_routing_table_id: table,
        last_known_epoch: epoch,
        features: vec![],
    };
    let mut buf = Vec::new();
    req.write_to(&mut buf);
    buf
}

/// The data of an outgoing CCP Prepare, checking its destination.
pub fn data_of(o: &Outgoing) -> Vec<u8> {
    let p = Prepare::new_checked(&o.packet[..]).expect("a Prepare");
    let want = match o.kind {
        Kind::Control => PEER_ROUTE_CONTROL,
        Kind::Update => PEER_ROUTE_UPDATE,
    };
    assert_eq!(p.destination(), want);
    assert_eq!(p.amount(), 0);
    p.data().to_vec()
}

/// (from, to, new prefixes with paths, withdrawn) of an outgoing update.
pub type Decoded = (u32, u32, Vec<(String, Vec<String>)>, Vec<String>);

pub fn decode_update(o: &Outgoing) -> Decoded {
    assert_eq!(o.kind, Kind::Update);
    let data = data_of(o);
    let u = RouteUpdateRequest::decode(&data).expect("update decodes");
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).expect("utf8");
    (
        u.from_epoch_index,
        u.to_epoch_index,
        u.new_routes
            .iter()
            .map(|r| (s(r.prefix), r.path.iter().map(|h| s(h)).collect()))
            .collect(),
        u.withdrawn_routes.iter().map(|w| s(w)).collect(),
    )
}

/// Learned routes as sorted (prefix, account) strings/ids.
pub fn learned(c: &Ccp) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = c
        .learned_routes()
        .into_iter()
        .map(|(p, a)| (p.as_str().to_string(), a.0))
        .collect();
    v.sort();
    v
}

pub fn packet_bytes(o: &Outgoing) -> BytesMut {
    o.packet.clone()
}
