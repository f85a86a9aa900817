//! Log lines on stderr: `tapswitch: <level>: message`. `RUST_LOG` changes
//! the level (default `info`).

use std::io::Write;

pub fn init() {
    let env = env_logger::Env::default().default_filter_or("info");
    env_logger::Builder::from_env(env)
        .format(|buf, record| {
            let level = record.level().to_string().to_lowercase();
            writeln!(buf, "tapswitch: {level}: {}", record.args())
        })
        .init();
}
