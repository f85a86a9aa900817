//! `--tap` ports: a TAP device, created if it does not exist.
//!
//! The device is opened with IFF_NO_PI (frames only, no packet-information
//! prefix) and IFF_VNET_HDR plus TUNSETOFFLOAD, so the stack on the other
//! side may hand us 64 KiB TCP super-frames with partial checksums. It is
//! brought up. A TAP the switch created is not persistent: it disappears
//! when the switch closes it (on exit or `port rm`). A persistent TAP that
//! existed before (`ip tuntap add`) is left in place.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use crate::batch::RxBatch;
use crate::sys;
use crate::vnet::VnetHdr;
use crate::{PortError, PortRx, PortTx, check_interface_name};

/// An opened TAP port and whether this call created the device.
#[derive(Debug)]
pub struct OpenedTap {
    pub rx: TapRx,
    pub tx: TapTx,
    pub created: bool,
}

/// Opens (or creates) TAP device `name` as a switch port.
pub fn open(name: &str) -> Result<OpenedTap, PortError> {
    check_interface_name(name)?;
    let existed = sys::if_nametoindex(name).is_ok();
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(PortError::NoTunDevice {
            name: name.to_string(),
        });
    }
    let fd = sys::tun::open_tap(name, true).map_err(|err| match err.raw_os_error() {
        // TUNSETIFF on an existing non-TAP interface.
        Some(libc::EINVAL) | Some(libc::EBUSY) if existed => PortError::NotATap {
            name: name.to_string(),
        },
        _ => PortError::from_io(name, "opening the TAP device", err),
    })?;
    let control = sys::control_socket()
        .map_err(|err| PortError::from_io(name, "opening a control socket", err))?;
    sys::set_interface_up(control.as_fd(), name)
        .map_err(|err| PortError::from_io(name, "bringing the TAP device up", err))?;
    let mtu = sys::interface_mtu(control.as_fd(), name)
        .map_err(|err| PortError::from_io(name, "reading the MTU", err))?;
    let fd = Arc::new(fd);
    Ok(OpenedTap {
        rx: TapRx {
            fd: fd.clone(),
            head: [0; 10],
        },
        tx: TapTx { fd, mtu },
        created: !existed,
    })
}

/// The receiving half of a `--tap` port.
#[derive(Debug)]
pub struct TapRx {
    fd: Arc<OwnedFd>,
    head: [u8; 10],
}

impl PortRx for TapRx {
    fn recv_batch(&mut self, batch: &mut RxBatch) -> io::Result<usize> {
        batch.clear();
        while batch.len() < batch.capacity() {
            let read = {
                let Some(buf) = batch.free_buffers().next() else {
                    break;
                };
                sys::read_frame(self.fd.as_fd(), &mut self.head, buf)
            };
            match read {
                Ok(n) => batch.commit(
                    n.saturating_sub(VnetHdr::LEN),
                    VnetHdr::from_bytes(&self.head),
                ),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if batch.is_empty() => return Err(err),
                // Report the error on the next call, after these frames.
                Err(_) => break,
            }
        }
        Ok(batch.len())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}

/// The sending half of a `--tap` port.
#[derive(Debug)]
pub struct TapTx {
    fd: Arc<OwnedFd>,
    mtu: usize,
}

impl PortTx for TapTx {
    fn send(&self, vnet: &VnetHdr, frame: &[u8]) -> io::Result<()> {
        sys::write_frame(self.fd.as_fd(), &vnet.to_bytes(), frame)?;
        Ok(())
    }

    fn offloads(&self) -> bool {
        true
    }

    fn mtu(&self) -> usize {
        self.mtu
    }
}
