//! DNS at the gateway: the gateway's address, port 53, answers the names
//! of its network and forwards everything else to the host's resolvers.
//!
//! Docker's embedded DNS does this on user-defined networks (not on the
//! default `bridge`); tapswitch does it on every bridge network, as
//! aardvark-dns does for Podman. The gateway thread answers UDP and TCP
//! at gateway:53 with it (through [`crate::host_side`]).
//!
//! - [`names`]: the [`NameTable`] (container names, bare and in
//!   `tapswitch.internal`; `host.tapswitch.internal` is the gateway).
//! - [`responder`]: the [`DnsResponder`]: one query in, an answer or "forward
//!   it" out. Malformed input is counted and answered FORMERR or dropped,
//!   never a panic.
//! - [`forwarder`]: the [`Forwarder`]: the id bookkeeping of queries in
//!   flight upstream, with per-attempt timeouts on an injected clock.
//! - [`upstream`]: `/etc/resolv.conf`, `--dns-upstream IP[:PORT]`, and the
//!   resolv.conf a container gets.
//! - [`tcp`]: DNS over TCP's two-byte length framing.
//!
//! **Why `hickory-proto`.** DNS messages are easy to get subtly wrong
//! (name compression, EDNS, case-insensitive names, truncated input), and
//! the issue asks for a well-kept crate. Weighed: `hickory-proto` (the wire
//! layer of the Hickory DNS resolver and server, widely used, maintained,
//! usable without an async runtime: only its wire types are used here, with
//! default features off, so no `std` thread RNG and no networking);
//! `domain` (NLnet Labs, also good, but its zero-copy API is heavier for a
//! few message shapes); `simple-dns` (small, fewer users); `dns-parser`
//! (unmaintained). hickory-proto costs build time (it pulls `idna` and
//! `url`), which is acceptable for one crate that decodes untrusted input
//! correctly.
//!
//! # Integration
//!
//! 1. The gateway thread owns a [`DnsResponder`] built from the network's
//!    containers (IPAM's state: name → address) and a [`Forwarder`] built
//!    from [`upstream::choose_upstreams`]. On `container create`/`rm` the
//!    table is rebuilt ([`DnsResponder::set_names`]).
//! 2. UDP to gateway:53: the payload goes to [`DnsResponder::handle`].
//!    `Answer` goes back from gateway:53 to the asking endpoint;
//!    `Forward(question)` goes to [`Forwarder::forward`] with a random id
//!    from the OS, and the [`forwarder::Outgoing`] bytes are sent from one
//!    unconnected UDP socket of the switch (an ephemeral port chosen by the
//!    kernel). That socket's datagrams go to [`Forwarder::reply`] with their
//!    source address. [`Forwarder::expire`] runs with the flow timers.
//! 3. TCP to gateway:53: a smoltcp listening socket on the gateway's own
//!    address; [`TcpFramer`] cuts the stream into messages, [`tcp::frame`]
//!    frames the answers (RFC 1035 4.2.2). Local answers as above; forwarded
//!    ones over a TCP connection to the upstream ([`Forwarder::forward_tcp`]).
//!    A truncated UDP answer from an upstream is asked again of it over TCP
//!    ([`Forwarder::retry_truncated`]); an answer too large for a UDP
//!    client reaches it truncated, so its resolver retries over TCP.
//! 4. `container create` writes `/etc/netns/tapswitch-NAME/resolv.conf`
//!    ([`container_resolv_conf`]: `nameserver <gateway>`, `search
//!    tapswitch.internal`), and
//!    `container exec` bind-mounts it in a private mount namespace, as
//!    `ip netns exec` does.

pub mod forwarder;
pub mod names;
pub mod responder;
pub mod tcp;
pub mod upstream;

pub use forwarder::{Expired, Forwarder, ForwarderStats, NotForwarded, Outgoing, Reply};
pub use names::{DEFAULT_DOMAIN, Lookup, NameTable};
pub use responder::{DnsDrop, DnsResponder, DnsStats, DnsVerdict, Question};
pub use tcp::{Framed, TcpFramer};
pub use upstream::{ResolvConf, choose_upstreams, container_resolv_conf, parse_upstream};

#[cfg(test)]
mod tests;
