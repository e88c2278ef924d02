//! Where the stack's programs are.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// `BUTTON_PG_BIN`, else the newest `/usr/lib/postgresql/<major>/bin`.
pub fn postgres_bin() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("BUTTON_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or(Error::NotFound {
        what: "PostgreSQL server binaries",
        hint: "run scripts/setup, or set BUTTON_PG_BIN to the folder holding initdb and postgres"
            .to_owned(),
    })
}

pub fn redis_server() -> Result<PathBuf> {
    on_path("redis-server").ok_or(Error::NotFound {
        what: "redis-server",
        hint: "run scripts/setup".to_owned(),
    })
}

/// `BUTTON_TANSU`, else `tansu` on PATH, else cargo's bin folder.
pub fn tansu() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("BUTTON_TANSU") {
        return Ok(PathBuf::from(path));
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|p| p.join("bin").join("tansu"));
    on_path("tansu")
        .or(cargo_bin.filter(|p| p.is_file()))
        .ok_or(Error::NotFound {
            what: "the tansu broker",
            hint: "run scripts/setup (cargo install --locked tansu), or set BUTTON_TANSU"
                .to_owned(),
        })
}

/// `BUTTON_BIN_DIR/<name>`, else beside the running executable (or one
/// level up, where test executables sit in `target/<profile>/deps`).
pub fn button_bin(name: &'static str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("BUTTON_BIN_DIR") {
        let path = PathBuf::from(dir).join(name);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::NotFound {
                what: name,
                hint: format!("{} does not exist", path.display()),
            })
        };
    }
    let exe = std::env::current_exe()?;
    let dirs = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(Path::to_path_buf)
        .collect::<Vec<_>>();
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(Error::NotFound {
            what: name,
            hint: "build the workspace (cargo build --workspace) or set BUTTON_BIN_DIR".to_owned(),
        })
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
