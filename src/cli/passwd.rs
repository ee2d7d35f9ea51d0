//! `strata passwd [-D] FILE USER`: adds, changes or deletes one user of an `[auth]
//! password_file`. New passwords are stored as argon2id; the other lines (Mosquitto's
//! `$6$`/`$7$` among them) are kept as they are. The file is replaced whole through a
//! temporary file and a rename, with mode 0600, so a crash leaves the old file or the new one.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

/// What to do to the user.
pub enum Change {
    /// Add the user, or set their password.
    Set,
    /// Remove the user.
    Delete,
}

pub fn passwd(file: &Path, user: &str, change: Change) -> anyhow::Result<ExitCode> {
    if user.is_empty() || user.contains(':') || user.contains(char::is_control) {
        anyhow::bail!("user name {user:?}: must be non-empty, without ':' or control characters");
    }
    let existing = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    // Refuse to rewrite a file the broker could not read: the damage would be kept.
    strata_frontend::auth::PasswordFile::parse(&existing, file)?;
    let owns = |line: &str| line.split_once(':').is_some_and(|(name, _)| name == user);
    let mut lines: Vec<String> = existing.lines().map(str::to_owned).collect();
    match change {
        Change::Delete => {
            let before = lines.len();
            lines.retain(|line| !owns(line));
            if lines.len() == before {
                anyhow::bail!("{}: no user {user:?}", file.display());
            }
        }
        Change::Set => {
            let password = read_password()?;
            let hash = strata_frontend::auth::hash_password(password.as_bytes())
                .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
            let entry = format!("{user}:{hash}");
            match lines.iter_mut().find(|line| owns(line)) {
                Some(line) => *line = entry,
                None => lines.push(entry),
            }
        }
    }
    write_atomically(file, &lines)?;
    Ok(ExitCode::SUCCESS)
}

/// One line from standard input when it is not a terminal; otherwise asked twice, unechoed.
fn read_password() -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("reading the password")?;
        let second = rpassword::prompt_password("Reenter password: ").context("reading the password")?;
        if first != second {
            anyhow::bail!("the passwords do not match");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.is_empty() {
        anyhow::bail!("empty password");
    }
    Ok(password)
}

fn write_atomically(file: &Path, lines: &[String]) -> anyhow::Result<()> {
    let name = file.file_name().with_context(|| format!("{}: not a file name", file.display()))?;
    let temporary = file.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let write = || -> std::io::Result<()> {
        let mut out =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
        // `mode` applies only to a file created now; a leftover temporary file keeps its own.
        out.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        for line in lines {
            writeln!(out, "{line}")?;
        }
        out.sync_all()?;
        std::fs::rename(&temporary, file)?;
        if let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().with_context(|| format!("writing {}", file.display()))
}
