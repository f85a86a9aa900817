//! tapswitch's networks and address management, Docker style.
//!
//! Read it in this order:
//!
//! - [`subnet`]: IPv4 CIDR blocks, valid by construction.
//! - [`network`]: a network's driver and addressing, and the allocation rule
//!   (lowest free address of the pool; network, broadcast, gateway and aux
//!   addresses reserved).
//! - [`ports`]: published ports (`-p`), Docker's syntax, conflicts, and
//!   Docker's `NetworkSettings.Ports` shape.
//! - [`mac`]: Docker's MAC-from-IP (172.17.0.2 → 02:42:ac:11:00:02).
//! - [`state`]: all networks and containers; a container's address is its
//!   lease. Pure: ids, times and the boot id are arguments.
//! - [`overlay`]: overlay networks (VXLAN settings: VNI, port, peers; the
//!   MTU is the network's own, as on every driver).
//! - [`membership`]: which hosts serve an overlay network, as a pure state
//!   machine fed by the store's watch events and time, and the registration
//!   records and key layout it reads.
//! - [`store`]: where the state is kept: the local state directory (one
//!   JSON file, replaced by atomic rename under an exclusive lock, so
//!   concurrent commands never hand out the same address and a crash at any
//!   moment leaves a valid file), or etcd (the same document, changed by
//!   compare-and-swap transactions, shared by several hosts).
//! - [`etcd`]: a small blocking client for etcd's v3 JSON gateway.
//! - [`registry`]: the membership records in etcd: list, watch, register
//!   under a lease and keep it alive.
//!
//! The only I/O is in [`store`], [`etcd`] and [`registry`] (and [`store::random_id`]);
//! everything else is plain data and rules.
//!
//! How `tapswitch serve --network NAME` finds its gateway:
//!
//! ```no_run
//! let store = ipam::Store::open(ipam::state_dir(None))?;
//! let network = store.network("bridge")?;
//! assert_eq!(network.gateway_cidr().as_deref(), Some("172.17.0.1/16"));
//! # Ok::<(), ipam::Error>(())
//! ```

#![forbid(unsafe_code)]

pub mod clock;
pub mod error;
pub mod etcd;
pub mod mac;
pub mod membership;
pub mod network;
pub mod overlay;
pub mod ports;
pub mod registry;
pub mod state;
pub mod store;
pub mod subnet;

pub use error::{Error, Result};
pub use mac::MacAddr;
pub use network::{Driver, IpamConfig, Network, NetworkSpec};
pub use overlay::{OverlayConfig, OverlaySpec};
pub use ports::{PortProtocol, PublishedPort};
pub use state::{AttachedNamespace, Container, NamespaceKeeper, State};
pub use store::{EtcdUrl, Store, Transaction, state_dir};
pub use subnet::Subnet;
