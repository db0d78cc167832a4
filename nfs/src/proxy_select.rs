//! PROXY_SELECT: the policy NF of the split proxy's per-flow upgrade (docs/proxy.md
//! "Per-flow upgrade to the proxy").
//!
//! ```toml
//! [stack.proxy]
//! intercept_port = 80
//! upgrade = "on_request"
//! # ...
//!
//! [[nf]]
//! name = "select"
//! kind = "proxy_select"
//! hosts = ["10.99.0.11"]     # flows to these servers go into the proxy (e.g. its cache)
//! ```
//!
//! On each `FLOW_REQ` of the proxy (which carries the flow's SYN) it answers a `FLOW_DEST`
//! with [`ProxyChoice::Proxy`] when the SYN's destination address is one of `hosts`, and
//! [`ProxyChoice::Pass`] otherwise (the flow stays on the cheap path). A request without
//! its packet is passed, counted `no_packet`.

use std::net::{IpAddr, Ipv4Addr};

use actors::desc::EventDesc;
use actors::event::builtin;
use actors::splice::ProxyChoice;
use actors::{Actor, Context, Contract, Verdict};
use serde::Deserialize;

use crate::balance::dest_event;
use crate::common::NfCommon;
use crate::{Kind, NfOptions};

/// The kind's name in the app file.
pub const NAME: &str = "proxy_select";

/// The kind, for [`KINDS`](crate::KINDS).
pub const KIND: Kind<ProxySelectConfig> = Kind::new();

/// Most addresses in `hosts`.
pub const MAX_HOSTS: usize = 4096;

/// PROXY_SELECT options.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySelectConfig {
    /// IPv4 server addresses whose flows go into the proxy.
    pub hosts: Vec<String>,
}

fn parse_hosts(hosts: &[String]) -> Result<Vec<Ipv4Addr>, Vec<String>> {
    let mut errs = Vec::new();
    if hosts.is_empty() {
        errs.push("key `hosts`: name at least one IPv4 address (the servers whose flows get the proxy)".into());
    }
    if hosts.len() > MAX_HOSTS {
        errs.push(format!("key `hosts`: at most {MAX_HOSTS} addresses, found {}", hosts.len()));
    }
    let mut out = Vec::new();
    for h in hosts {
        match h.parse::<Ipv4Addr>() {
            Ok(a) => out.push(a),
            Err(_) => errs.push(format!("key `hosts`: `{h}` is not an IPv4 address")),
        }
    }
    if errs.is_empty() {
        out.sort_unstable();
        out.dedup();
        Ok(out)
    } else {
        Err(errs)
    }
}

impl NfOptions for ProxySelectConfig {
    const NAME: &'static str = NAME;

    fn check(&mut self, common: &NfCommon, _registry: &mut actors::EventRegistry) -> Result<(), Vec<String>> {
        parse_hosts(&self.hosts).map(|_| ()).map_err(|e| e.into_iter().map(|m| common.error(NAME, m)).collect())
    }

    fn build(&self, common: &NfCommon) -> Result<Box<dyn Actor>, String> {
        let hosts = parse_hosts(&self.hosts).map_err(|e| common.error(NAME, e.join("; ")))?;
        let contract = common.flow_dest_contract(NAME);
        Ok(Box::new(ProxySelect { contract, hosts, proxied: 0, passed: 0, no_packet: 0 }))
    }
}

/// The actor (see the module docs).
pub struct ProxySelect {
    contract: Contract,
    hosts: Vec<Ipv4Addr>,
    proxied: u64,
    passed: u64,
    no_packet: u64,
}

impl Actor for ProxySelect {
    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn handle(&mut self, ev: &mut EventDesc, cx: &mut Context<'_>) -> Verdict {
        let Some(flow) = ev.flow.filter(|_| ev.event_type == builtin::FLOW_REQ) else { return Verdict::Continue };
        let dst = cx.view(ev).and_then(|v| v.dst_ip());
        if dst.is_none() {
            self.no_packet += 1;
        }
        let proxy = matches!(dst, Some(IpAddr::V4(a)) if self.hosts.binary_search(&a).is_ok());
        if proxy {
            self.proxied += 1;
        } else {
            self.passed += 1;
        }
        let mut d = dest_event(ev, flow, cx);
        (if proxy { ProxyChoice::Proxy } else { ProxyChoice::Pass }).write(&mut d);
        cx.publish(d);
        Verdict::Continue
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("flows_to_proxy".into(), self.proxied),
            ("flows_passed".into(), self.passed),
            ("no_packet".into(), self.no_packet),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_checked() {
        assert_eq!(parse_hosts(&["10.0.0.2".into(), "10.0.0.1".into()]).unwrap().len(), 2);
        assert!(parse_hosts(&[]).unwrap_err()[0].contains("at least one"));
        assert!(parse_hosts(&["web".into()]).unwrap_err()[0].contains("`web` is not an IPv4 address"));
    }
}
