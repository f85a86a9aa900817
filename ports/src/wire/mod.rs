//! Checked, zero-copy views of the headers the switch reads and writes.
//!
//! Each protocol has a module with a `Packet` (or `Frame`) view over any
//! `T: AsRef<[u8]>`, in the manner of smoltcp's `wire` module:
//!
//! - `field` names the byte ranges of the header, so no caller counts offsets;
//! - `new_checked` refuses a buffer shorter than the header or than its own
//!   length fields say, and header lengths below the minimum; after it every
//!   getter is in bounds (`new_unchecked` skips the check and then getters
//!   panic on a short buffer, as slices do);
//! - setters exist on `T: AsMut<[u8]>` for the fields the switch rewrites
//!   (lengths, ids, checksums).
//!
//! The part that is the same in every view (the struct, the constructors,
//! `into_inner`, `payload`, `payload_mut`, `into_payload`) is declared once, by `header_view!` below;
//! each module writes only what its protocol decides.
//!
//! Frames come from containers, so every byte is hostile: parse with
//! `new_checked` and treat its error as "not this protocol".
//!
//! Layers: [`ethernet`] (and [`vlan`] tags), [`arp`], [`ipv4`], [`ipv6`]
//! (with its extension headers), [`udp`], [`tcp`], [`icmpv4`], [`icmpv6`];
//! [`ip`] holds the protocol numbers, [`checksum`] the Internet checksum,
//! [`mac`] the Ethernet address; [`vxlan`] the tunnel header around a frame.

/// Declares a header view `$view<T: AsRef<[u8]>>` and the part of it that is
/// the same for every protocol: the struct over a `buffer`, `new_unchecked`,
/// `new_checked` (which calls the view's own `check_len`), `into_inner` and,
/// for a view with a payload, `payload`, `payload_mut` and `into_payload`
/// over the view's own `payload_range()`.
///
/// A macro rather than a trait or a generic struct: the views differ only in
/// `check_len` and where the payload starts, and their callers want inherent
/// methods on named types (`ipv4::Packet::new_checked`, no trait to import),
/// each documented by `cargo doc` like a hand-written struct. Each view module
/// keeps `check_len`, its getters and setters, and a private
/// `payload_range()` (documented there: where its payload lies) that
/// `payload`, `payload_mut` and `into_payload` share, so the three cannot
/// disagree about where the payload is.
macro_rules! header_view {
    (
        $(#[$attr:meta])*
        pub struct $view:ident;
        $(into_payload = $payload_range:ident;)?
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $view<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $view<T> {
            /// A view of `buffer` without [`Self::check_len`]: getters then
            /// panic on a buffer that is too short, as slices do.
            pub const fn new_unchecked(buffer: T) -> Self {
                $view { buffer }
            }

            /// The view, if [`Self::check_len`] accepts `buffer`; every getter
            /// is then in bounds.
            pub fn new_checked(buffer: T) -> $crate::wire::Result<Self> {
                let view = Self::new_unchecked(buffer);
                view.check_len()?;
                Ok(view)
            }

            /// The buffer the view was made over.
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }

        $(
            impl<T: AsRef<[u8]>> $view<T> {
                /// The payload: the bytes after the header (where they end
                /// is the view's own rule).
                pub fn payload(&self) -> &[u8] {
                    &self.buffer.as_ref()[self.$payload_range()]
                }
            }

            impl<T: AsRef<[u8]> + AsMut<[u8]>> $view<T> {
                /// The payload, to write.
                pub fn payload_mut(&mut self) -> &mut [u8] {
                    let range = self.$payload_range();
                    &mut self.buffer.as_mut()[range]
                }
            }

            impl<'a, T: AsRef<[u8]> + ?Sized> $view<&'a T> {
                #[doc = concat!("[`", stringify!($view), "::payload`] for as long as the buffer")]
                /// lives, so a parse can walk down the layers without keeping
                /// each view.
                pub fn into_payload(self) -> &'a [u8] {
                    let range = self.$payload_range();
                    let data: &'a [u8] = self.buffer.as_ref();
                    &data[range]
                }
            }
        )?
    };
}

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod mac;
pub mod tcp;
pub mod udp;
pub mod vlan;
pub mod vxlan;

#[cfg(test)]
mod tests;

pub use mac::{MacAddr, ParseMacError};

/// A header field: the byte range it occupies.
pub type Field = std::ops::Range<usize>;
/// What follows a fixed header.
pub type Rest = std::ops::RangeFrom<usize>;

/// Why a buffer is not a well-formed header of the protocol asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header, or than its length fields say.
    #[error("buffer shorter than the header or its length fields")]
    Truncated,
    /// The IP version field names another version.
    #[error("wrong IP version")]
    Version,
    /// A header-length field below the protocol's minimum header (IPv4
    /// IHL below 5, TCP data offset below 5).
    #[error("header length below the minimum")]
    HeaderLength,
    /// A total-length field shorter than its own header (IPv4 total length,
    /// UDP length).
    #[error("length field shorter than the header")]
    TotalLength,
}

pub type Result<T> = std::result::Result<T, Error>;

/// `Err(Truncated)` unless `data` holds at least `len` bytes: the check every
/// view's `check_len` makes before reading a field, and again for the length
/// its header states.
fn require_len(data: &[u8], len: usize) -> Result<()> {
    if data.len() < len {
        return Err(Error::Truncated);
    }
    Ok(())
}

/// The big-endian `u16` at `field` (two bytes; in bounds after `new_checked`).
fn get_u16(data: &[u8], field: Field) -> u16 {
    let b = &data[field];
    u16::from_be_bytes([b[0], b[1]])
}

fn set_u16(data: &mut [u8], field: Field, value: u16) {
    data[field].copy_from_slice(&value.to_be_bytes());
}

fn get_u32(data: &[u8], field: Field) -> u32 {
    let b = &data[field];
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn set_u32(data: &mut [u8], field: Field, value: u32) {
    data[field].copy_from_slice(&value.to_be_bytes());
}
