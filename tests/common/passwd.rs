//! Password files for the authentication tests, written by the real `mosquitto_passwd`
//! (apt `mosquitto`), so that the broker reads what Mosquitto's users bring.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;
use std::process::Command;

/// Creates `path` with these users and passwords (`$7$` lines, mosquitto_passwd's default).
pub fn mosquitto_passwd_file(path: &Path, users: &[(&str, &str)]) {
    for (index, (user, password)) in users.iter().enumerate() {
        let mut command = Command::new("mosquitto_passwd");
        if index == 0 {
            command.arg("-c");
        }
        let status = command
            .arg("-b")
            .arg(path)
            .args([user, password])
            .status()
            .expect("mosquitto_passwd is installed (apt mosquitto)");
        assert!(status.success(), "mosquitto_passwd for {user}");
    }
}
