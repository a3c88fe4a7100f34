//! Fuzz the QMP line parser: any bytes must give a message or a typed
//! error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(qmp::Message::Greeting(g)) = qmp::parse_message(data) {
        // Exercise the parsed value a little.
        let _ = g.capabilities.iter().any(|c| c == "oob");
    }
});
