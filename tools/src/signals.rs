//! SIGINT and SIGTERM as a channel, so the main loop can wait for them
//! alongside other events.

use anyhow::{Context, Result};
use crossbeam_channel::Receiver;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A channel that receives the signal's name when SIGINT or SIGTERM arrives.
pub fn termination() -> Result<Receiver<&'static str>> {
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).context("installing the SIGINT/SIGTERM handlers")?;
    let (tx, rx) = crossbeam_channel::bounded(4);
    std::thread::Builder::new()
        .name("tapswitch-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                if tx.send(name).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}
