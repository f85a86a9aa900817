//! pcapng blocks: the reader behind [`PcapReader`](super::reader::PcapReader)
//! for pcapng files, and the block encoders for pcapng output and live
//! capture.
//!
//! A pcapng file is a list of blocks, each `type, length, body, length`.
//! A section header block (SHB) starts each section and says its byte order;
//! interface description blocks (IDB) declare the interfaces packets refer
//! to by number (counted per section), each with its link type, snap length
//! and timestamp resolution (`if_tsresol`, microseconds unless it says
//! otherwise) and offset (`if_tsoffset`). Packets come in enhanced packet
//! blocks (EPB), or in the older simple (SPB, no timestamp: the previous
//! frame's time is used) and obsolete (OPB) packet blocks. Every other block
//! (name resolution, statistics, comments, custom) is skipped.
//!
//! Interfaces are numbered across the whole file, from 0, in the order their
//! IDBs appear. A file with one interface is read as it is; from a file with
//! several, the caller must choose one ([`InterfaceChoice`]), because frames
//! from different interfaces are different ports to a switch.
//!
//! Output is one section in native byte order with one Ethernet interface,
//! `if_tsresol` = 9 (nanoseconds) and a snap length of
//! [`MAX_SNAPLEN`], and EPBs that carry the direction of each frame in
//! `epb_flags` when it is known (inbound = 1, outbound = 2), which tcpdump
//! and Wireshark show.

use std::io::Read;

use super::error::{ReadError, ReadErrorKind};
use super::frame::{Direction, InterfaceChoice, LINKTYPE_ETHERNET, MAX_SNAPLEN, RawFrame};
use super::link;
use super::source::{Source, check_record_len, effective_snaplen, read_u16, read_u32, truncated};

/// Section header block; the same bytes in either byte order.
pub(crate) const SHB_TYPE: u32 = 0x0a0d_0d0a;
const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
const IDB_TYPE: u32 = 1;
const OPB_TYPE: u32 = 2;
const SPB_TYPE: u32 = 3;
const EPB_TYPE: u32 = 6;

/// No block of a sane file is this long: the largest packet block is a
/// [`MAX_SNAPLEN`] frame plus options.
const MAX_BLOCK_LEN: u32 = 16 << 20;

const OPT_END: u16 = 0;
const OPT_IF_NAME: u16 = 2;
const OPT_IF_TSRESOL: u16 = 9;
const OPT_IF_FCSLEN: u16 = 13;
const OPT_IF_TSOFFSET: u16 = 14;
const OPT_SHB_USERAPPL: u16 = 4;
const OPT_EPB_FLAGS: u16 = 2;

/// Reading state for a pcapng file; see the module documentation.
#[derive(Debug)]
pub(crate) struct NgReader {
    choice: Option<InterfaceChoice>,
    big_endian: bool,
    /// Index of the current section's first interface.
    section_base: usize,
    interfaces: Vec<Interface>,
    chosen: Option<usize>,
    /// The last timestamp read (for simple packet blocks, which have none).
    last_timestamp: u64,
}

#[derive(Debug)]
struct Interface {
    linktype: u32,
    snaplen: u32,
    name: Option<String>,
    units_per_sec: u64,
    offset_secs: i64,
    fcs_len: u8,
}

impl Interface {
    fn label(&self, index: usize) -> String {
        match &self.name {
            Some(name) => format!("#{index} {name}"),
            None => format!("#{index}"),
        }
    }
}

impl NgReader {
    pub(crate) fn new(choice: Option<InterfaceChoice>) -> Self {
        NgReader {
            choice,
            big_endian: false,
            section_base: 0,
            interfaces: Vec::new(),
            chosen: None,
            last_timestamp: 0,
        }
    }

    /// Reads the rest of a section header block that starts at `start`,
    /// whose type and (raw) length were read already.
    pub(crate) fn read_section_header<R: Read>(
        &mut self,
        source: &mut Source<R>,
        start: u64,
        raw_len: [u8; 4],
    ) -> Result<(), ReadError> {
        let mut magic = [0u8; 4];
        source.fill_exact(&mut magic, start, "section header block", 8)?;
        self.big_endian = if u32::from_le_bytes(magic) == BYTE_ORDER_MAGIC {
            false
        } else if u32::from_be_bytes(magic) == BYTE_ORDER_MAGIC {
            true
        } else {
            return Err(bad_block(
                start,
                SHB_TYPE,
                format!(
                    "byte-order magic 0x{:08x} is not 0x1a2b3c4d",
                    u32::from_be_bytes(magic)
                ),
            ));
        };
        let len = read_u32(self.big_endian, &raw_len);
        check_block_len(start, SHB_TYPE, len, 28)?;
        let mut body = vec![0u8; len as usize - 12];
        source.fill_exact(&mut body, start, "section header block", 12)?;
        check_trailer(start, SHB_TYPE, len, self.big_endian, &body)?;
        let (major, minor) = (
            read_u16(self.big_endian, &body[0..2]),
            read_u16(self.big_endian, &body[2..4]),
        );
        if major != 1 {
            return Err(ReadError::new(
                start,
                ReadErrorKind::BadVersion { major, minor },
            ));
        }
        self.section_base = self.interfaces.len();
        Ok(())
    }

    /// Reads blocks until a frame of the chosen interface, or the end.
    pub(crate) fn next_frame<R: Read>(
        &mut self,
        source: &mut Source<R>,
        buf: &mut Vec<u8>,
    ) -> Result<Option<RawFrame>, ReadError> {
        loop {
            let start = source.offset;
            let mut head = [0u8; 8];
            match source.fill(&mut head)? {
                0 => return self.finish(start).map(|()| None),
                8 => {}
                got => return Err(truncated(start, "block header", 8, got as u64)),
            }
            let block_type = read_u32(self.big_endian, &head[0..4]);
            if block_type == SHB_TYPE {
                // The length is in the new section's byte order, which
                // the byte-order magic after it tells.
                self.read_section_header(source, start, [head[4], head[5], head[6], head[7]])?;
                continue;
            }
            let len = read_u32(self.big_endian, &head[4..8]);
            check_block_len(start, block_type, len, 12)?;
            if !matches!(block_type, IDB_TYPE | EPB_TYPE | OPB_TYPE | SPB_TYPE) {
                source.skip_exact(u64::from(len) - 8, start, "pcapng block", 8)?;
                continue;
            }
            let body_len = len as usize - 12;
            buf.resize(body_len + 4, 0);
            source.fill_exact(buf, start, "pcapng block", 8)?;
            check_trailer(start, block_type, len, self.big_endian, buf)?;
            let body = &buf[..body_len];
            if block_type == IDB_TYPE {
                self.add_interface(start, body)?;
                continue;
            }
            let Some((interface, timestamp, data_at, captured)) =
                self.packet(start, block_type, body)?
            else {
                continue;
            };
            self.last_timestamp = timestamp;
            let fcs = usize::from(self.interfaces[interface].fcs_len);
            let len = if captured >= fcs {
                captured - fcs
            } else {
                captured
            };
            let original_len = match block_type {
                SPB_TYPE => read_u32(self.big_endian, &body[0..4]),
                _ => read_u32(self.big_endian, &body[16..20]),
            };
            let direction = match block_type {
                EPB_TYPE => {
                    let options = &body[(data_at + captured).next_multiple_of(4).min(body_len)..];
                    Options::new(options, self.big_endian)
                        .find(|&(code, value)| code == OPT_EPB_FLAGS && value.len() == 4)
                        .and_then(|(_, value)| match read_u32(self.big_endian, value) & 3 {
                            1 => Some(Direction::Inbound),
                            2 => Some(Direction::Outbound),
                            _ => None,
                        })
                }
                _ => None,
            };
            return Ok(Some(RawFrame {
                timestamp_ns: timestamp,
                range: data_at..data_at + len,
                original_len,
                offset: start,
                direction,
                linktype: self.interfaces[interface].linktype,
            }));
        }
    }

    /// The packet in a packet block: (interface, timestamp, where the data
    /// starts in the body, captured length), or `None` for another interface.
    fn packet(
        &mut self,
        start: u64,
        block_type: u32,
        body: &[u8],
    ) -> Result<Option<(usize, u64, usize, usize)>, ReadError> {
        let be = self.big_endian;
        let section_interfaces = self.interfaces.len() - self.section_base;
        let (id, ticks, data_at, captured) = match block_type {
            EPB_TYPE | OPB_TYPE => {
                if body.len() < 20 {
                    return Err(bad_block(
                        start,
                        block_type,
                        "too short for a packet".into(),
                    ));
                }
                let id = if block_type == EPB_TYPE {
                    read_u32(be, &body[0..4])
                } else {
                    u32::from(read_u16(be, &body[0..2]))
                };
                let ticks = u64::from(read_u32(be, &body[4..8])) << 32
                    | u64::from(read_u32(be, &body[8..12]));
                let captured = read_u32(be, &body[12..16]);
                (id, Some(ticks), 20, captured)
            }
            _ => {
                // A simple packet block: interface 0, no timestamp, and the
                // captured length follows from the block length.
                if body.len() < 4 {
                    return Err(bad_block(
                        start,
                        block_type,
                        "too short for a packet".into(),
                    ));
                }
                let original = read_u32(be, &body[0..4]);
                let room = u32::try_from(body.len() - 4).unwrap_or(u32::MAX);
                (0, None, 4, original.min(room))
            }
        };
        if id as usize >= section_interfaces {
            return Err(ReadError::new(
                start,
                ReadErrorKind::UnknownInterface {
                    id,
                    known: section_interfaces as u32,
                },
            ));
        }
        self.refuse_several(start)?;
        let index = self.section_base + id as usize;
        if self.chosen != Some(index) {
            return Ok(None);
        }
        let interface = &self.interfaces[index];
        check_record_len(start, u64::from(captured), interface.snaplen)?;
        let captured = captured as usize;
        if data_at + captured > body.len() {
            return Err(bad_block(
                start,
                block_type,
                format!("a packet of {captured} bytes does not fit in the block"),
            ));
        }
        let timestamp = match ticks {
            Some(ticks) => to_nanos(ticks, interface)
                .ok_or_else(|| ReadError::new(start, ReadErrorKind::TimestampOutOfRange))?,
            None => self.last_timestamp,
        };
        Ok(Some((index, timestamp, data_at, captured)))
    }

    fn add_interface(&mut self, start: u64, body: &[u8]) -> Result<(), ReadError> {
        let be = self.big_endian;
        if body.len() < 8 {
            return Err(bad_block(
                start,
                IDB_TYPE,
                "too short for an interface".into(),
            ));
        }
        let mut interface = Interface {
            linktype: u32::from(read_u16(be, &body[0..2])),
            snaplen: effective_snaplen(read_u32(be, &body[4..8])),
            name: None,
            units_per_sec: 1_000_000,
            offset_secs: 0,
            fcs_len: 0,
        };
        for (code, value) in Options::new(&body[8..], be) {
            match (code, value.len()) {
                (OPT_IF_NAME, _) => {
                    interface.name = Some(String::from_utf8_lossy(value).into_owned());
                }
                (OPT_IF_TSRESOL, 1) => {
                    let v = value[0];
                    let units = if v & 0x80 == 0 {
                        10u64.checked_pow(u32::from(v))
                    } else {
                        2u64.checked_pow(u32::from(v & 0x7f))
                    };
                    interface.units_per_sec = units.filter(|&u| u > 0).ok_or_else(|| {
                        bad_block(start, IDB_TYPE, format!("timestamp resolution 0x{v:02x}"))
                    })?;
                }
                (OPT_IF_TSOFFSET, 8) => {
                    let b: [u8; 8] = value.try_into().expect("length matched");
                    interface.offset_secs = if be {
                        i64::from_be_bytes(b)
                    } else {
                        i64::from_le_bytes(b)
                    };
                }
                (OPT_IF_FCSLEN, 1) => interface.fcs_len = value[0],
                _ => {}
            }
        }
        let index = self.interfaces.len();
        let chosen = match &self.choice {
            // A second interface is refused at the next packet or the end,
            // so the message can list every interface declared before it.
            None => index == 0,
            Some(InterfaceChoice::Index(i)) => *i as usize == index,
            Some(InterfaceChoice::Name(name)) => {
                self.chosen.is_none() && interface.name.as_deref() == Some(name.as_str())
            }
        };
        if chosen {
            if !link::is_supported(interface.linktype) {
                return Err(ReadError::new(
                    start,
                    ReadErrorKind::NotEthernet {
                        linktype: interface.linktype,
                        interface: Some(index as u32),
                    },
                ));
            }
            self.chosen = Some(index);
        }
        self.interfaces.push(interface);
        Ok(())
    }

    /// Without a choice, a file may have one interface only.
    fn refuse_several(&self, at: u64) -> Result<(), ReadError> {
        if self.choice.is_none() && self.interfaces.len() > 1 {
            return Err(ReadError::new(
                at,
                ReadErrorKind::SeveralInterfaces {
                    interfaces: self
                        .interfaces
                        .iter()
                        .enumerate()
                        .map(|(i, interface)| interface.label(i))
                        .collect(),
                },
            ));
        }
        Ok(())
    }

    /// At the end of the file: a chosen interface must have been there.
    fn finish(&self, end: u64) -> Result<(), ReadError> {
        self.refuse_several(end)?;
        match (&self.choice, self.chosen) {
            (Some(choice), None) => Err(ReadError::new(
                end,
                ReadErrorKind::NoSuchInterface {
                    choice: choice.clone(),
                    count: self.interfaces.len() as u32,
                },
            )),
            _ => Ok(()),
        }
    }
}

fn to_nanos(ticks: u64, interface: &Interface) -> Option<u64> {
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(interface.units_per_sec);
    let nanos = i128::try_from(nanos).ok()? + i128::from(interface.offset_secs) * 1_000_000_000;
    u64::try_from(nanos).ok()
}

fn bad_block(start: u64, block_type: u32, why: String) -> ReadError {
    ReadError::new(start, ReadErrorKind::BadBlock { block_type, why })
}

fn check_block_len(start: u64, block_type: u32, len: u32, min: u32) -> Result<(), ReadError> {
    if len < min || !len.is_multiple_of(4) {
        return Err(bad_block(
            start,
            block_type,
            format!("length {len} is not a multiple of 4 of at least {min}"),
        ));
    }
    if len > MAX_BLOCK_LEN {
        return Err(bad_block(
            start,
            block_type,
            format!("length {len} is larger than any sane block ({MAX_BLOCK_LEN})"),
        ));
    }
    Ok(())
}

/// The length repeated at the end of the block must match the one at the start.
fn check_trailer(
    start: u64,
    block_type: u32,
    len: u32,
    big_endian: bool,
    rest: &[u8],
) -> Result<(), ReadError> {
    let trailer = read_u32(big_endian, &rest[rest.len() - 4..]);
    if trailer != len {
        return Err(bad_block(
            start,
            block_type,
            format!("length {len} at its start but {trailer} at its end"),
        ));
    }
    Ok(())
}

/// The options of a block: (code, value) until `opt_endofopt` or the end.
/// Malformed options end the list rather than fail the file: they are
/// commentary, and the packet is still good.
struct Options<'a> {
    rest: &'a [u8],
    big_endian: bool,
}

impl<'a> Options<'a> {
    fn new(rest: &'a [u8], big_endian: bool) -> Self {
        Options { rest, big_endian }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 4 {
            return None;
        }
        let code = read_u16(self.big_endian, &self.rest[0..2]);
        let len = usize::from(read_u16(self.big_endian, &self.rest[2..4]));
        if code == OPT_END || 4 + len > self.rest.len() {
            return None;
        }
        let value = &self.rest[4..4 + len];
        let padded = (4 + len).next_multiple_of(4).min(self.rest.len());
        self.rest = &self.rest[padded..];
        Some((code, value))
    }
}

/// Appends a section header block: native byte order, version 1.0, section
/// length unknown, and `shb_userappl`. Nothing from the clock or the host,
/// so output bytes are reproducible.
pub(crate) fn write_section_header(out: &mut Vec<u8>) {
    let start = begin_block(out, SHB_TYPE);
    out.extend_from_slice(&BYTE_ORDER_MAGIC.to_ne_bytes());
    out.extend_from_slice(&1u16.to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&(-1i64).to_ne_bytes());
    write_option(out, OPT_SHB_USERAPPL, b"tapswitch");
    write_option(out, OPT_END, &[]);
    end_block(out, start);
}

/// Appends an interface description block for an Ethernet interface with
/// nanosecond timestamps.
pub(crate) fn write_interface(out: &mut Vec<u8>, name: &str) {
    let start = begin_block(out, IDB_TYPE);
    out.extend_from_slice(&(LINKTYPE_ETHERNET as u16).to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&MAX_SNAPLEN.to_ne_bytes());
    if !name.is_empty() {
        write_option(out, OPT_IF_NAME, name.as_bytes());
    }
    write_option(out, OPT_IF_TSRESOL, &[9]);
    write_option(out, OPT_END, &[]);
    end_block(out, start);
}

/// Appends an enhanced packet block, the frame cut to [`MAX_SNAPLEN`].
pub(crate) fn write_packet(
    out: &mut Vec<u8>,
    interface: u32,
    timestamp_ns: u64,
    frame: &[u8],
    direction: Option<Direction>,
) {
    let captured = frame.len().min(MAX_SNAPLEN as usize);
    let start = begin_block(out, EPB_TYPE);
    out.extend_from_slice(&interface.to_ne_bytes());
    out.extend_from_slice(&((timestamp_ns >> 32) as u32).to_ne_bytes());
    out.extend_from_slice(&(timestamp_ns as u32).to_ne_bytes());
    out.extend_from_slice(&(captured as u32).to_ne_bytes());
    out.extend_from_slice(&u32::try_from(frame.len()).unwrap_or(u32::MAX).to_ne_bytes());
    out.extend_from_slice(&frame[..captured]);
    pad4(out, captured);
    if let Some(direction) = direction {
        write_option(out, OPT_EPB_FLAGS, &direction.flags().to_ne_bytes());
        write_option(out, OPT_END, &[]);
    }
    end_block(out, start);
}

fn begin_block(out: &mut Vec<u8>, block_type: u32) -> usize {
    let start = out.len();
    out.extend_from_slice(&block_type.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // the length, patched by end_block
    start
}

fn end_block(out: &mut Vec<u8>, start: usize) {
    let len = (out.len() - start + 4) as u32;
    out.extend_from_slice(&len.to_ne_bytes());
    out[start + 4..start + 8].copy_from_slice(&len.to_ne_bytes());
}

fn write_option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_ne_bytes());
    out.extend_from_slice(&(value.len() as u16).to_ne_bytes());
    out.extend_from_slice(value);
    pad4(out, value.len());
}

fn pad4(out: &mut Vec<u8>, len: usize) {
    out.resize(out.len() + (len.next_multiple_of(4) - len), 0);
}

#[cfg(test)]
mod tests;
