//! Fuzz qemu-config rendering with arbitrary strings: a config that validates
//! must render to an argv in which no value escaped its option (no newline,
//! and every free-form value appears escaped).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qemu_config::*;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = s.splitn(3, '\u{0}');
    let (path, tag, id) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("x"),
    );
    let mut c = Config::new(
        Machine::new("q35").with_accel("tcg"),
        Smp::new(1),
        Memory::new(256),
    );
    c.drives.push(Drive::raw(id, format!("/{path}")));
    c.devices.push(
        VirtioBlk {
            id: format!("{id}-dev"),
            drive: id.to_string(),
            serial: Some(tag.to_string()),
            ..Default::default()
        }
        .into(),
    );
    if c.validate().is_ok() {
        let argv = c.to_args();
        assert!(argv.iter().all(|a| !a.contains('\n')));
        let drive = argv
            .iter()
            .find(|a| a.starts_with("if=none") || a.contains("file="))
            .cloned()
            .unwrap_or_default();
        // The escaped path appears whole: no unescaped comma split it.
        assert!(drive.contains(&format!("/{}", path.replace(',', ",,"))));
    }
});
