//! The frame lab: capture files through the live switch's engine on virtual
//! time, compared with golden files, with a text language for writing and
//! reviewing the frames.
//!
//! The pieces, each depending only on those listed before it:
//!
//! - [`notation`]: how port names, bytes and times are spelled;
//! - [`text`]: the text fixture language (`tapswitch pcap build` and `show`);
//! - [`outputs`]: the output format and a directory whose files appear all
//!   at once or not at all;
//! - [`underlay`]: the VXLAN tunnel port (`--vxlan`), the live tunnel's
//!   table between a capture of the underlay and the switch;
//! - [`playback`]: the run itself, the engine and fabric fed from capture
//!   files on virtual time;
//! - [`summary`]: the counters and MAC table a run prints;
//! - [`expect`]: the comparison with golden files (`--expect`);
//! - [`replay`]: the `tapswitch replay` command around them.

pub mod expect;
pub mod notation;
pub mod outputs;
pub mod playback;
pub mod replay;
pub mod summary;
pub mod text;
pub mod underlay;
