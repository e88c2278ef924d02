//! One child process: spawned with its output in a log file, signalled,
//! restarted with the same command, and killed when its owner dies.

use crate::{Component, Error, Result};
use nix::sys::signal::{self, Signal};
use nix::unistd::{Pid, User};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Spec {
    program: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    log: PathBuf,
    as_postgres: bool,
    stop_signal: Signal,
}

impl Spec {
    pub fn new(program: PathBuf, log: PathBuf) -> Spec {
        Spec {
            program,
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            log,
            as_postgres: false,
            stop_signal: Signal::SIGTERM,
        }
    }

    pub fn args(mut self, args: impl IntoIterator<Item = String>) -> Spec {
        self.args.extend(args);
        self
    }

    pub fn env(mut self, key: &str, value: String) -> Spec {
        self.env.insert(key.to_owned(), value);
        self
    }

    pub fn envs(mut self, vars: BTreeMap<String, String>) -> Spec {
        self.env.extend(vars);
        self
    }

    pub fn cwd(mut self, dir: PathBuf) -> Spec {
        self.cwd = Some(dir);
        self
    }

    /// initdb and postgres refuse to run as root.
    pub fn run_as_postgres_user(mut self) -> Spec {
        self.as_postgres = true;
        self
    }

    pub fn stop_signal(mut self, signal: Signal) -> Spec {
        self.stop_signal = signal;
        self
    }

    fn command(&self) -> Result<Command> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            // Nothing of the caller's environment leaks in (a verbose
            // RUST_LOG in the shell made the broker log every span, a stray
            // BUTTON_CONFIG changed the service): every process sees only
            // what the stack pins plus what its spec says.
            .env_clear()
            .envs(crate::pinned_env())
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        if self.as_postgres && nix::unistd::geteuid().is_root() {
            let user = postgres_user()?;
            command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        die_with_parent(&mut command);
        Ok(command)
    }

    /// Runs to completion (initdb).
    pub async fn run_to_end(&self) -> Result<ExitStatus> {
        let mut command = tokio::process::Command::from(self.command()?);
        Ok(command.status().await?)
    }
}

#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only makes the
    // prctl system call, which is async-signal-safe. It runs after the
    // uid/gid change, which would otherwise clear the death signal.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
}

fn postgres_user() -> Result<User> {
    User::from_name("postgres")
        .ok()
        .flatten()
        .ok_or(Error::NotFound {
            what: "the postgres system user",
            hint: "install PostgreSQL's server package (scripts/setup)".to_owned(),
        })
}

/// Gives `path` to the postgres user when running as root.
pub fn chown_to_postgres(path: &Path) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        let user = postgres_user()?;
        std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

pub struct Proc {
    component: Component,
    spec: Spec,
    child: Option<Child>,
    exit: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(component: Component, spec: Spec) -> Result<Proc> {
        let mut proc = Proc {
            component,
            spec,
            child: None,
            exit: None,
        };
        proc.respawn()?;
        Ok(proc)
    }

    pub fn respawn(&mut self) -> Result<()> {
        if self.is_running() {
            return Err(Error::Component {
                component: self.component,
                message: "already running".to_owned(),
            });
        }
        let child = self.spec.command()?.spawn().map_err(|e| Error::Component {
            component: self.component,
            message: format!("cannot start {}: {e}", self.spec.program.display()),
        })?;
        tracing::debug!(component = %self.component, pid = child.id(), "started");
        self.child = Some(child);
        self.exit = None;
        Ok(())
    }

    pub fn log(&self) -> &Path {
        &self.spec.log
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.exited().is_none() && self.child.is_some()
    }

    /// The exit status if the process has ended (reaping it).
    pub fn exited(&mut self) -> Option<Option<i32>> {
        if let Some(status) = self.exit {
            return Some(status.code());
        }
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.exit = Some(status);
                self.child = None;
                Some(status.code())
            }
            _ => None,
        }
    }

    pub fn signal(&mut self, sig: Signal) -> Result<()> {
        let pid = self.pid().ok_or(Error::Component {
            component: self.component,
            message: "not running".to_owned(),
        })?;
        signal::kill(Pid::from_raw(pid as i32), sig).map_err(|e| Error::Component {
            component: self.component,
            message: format!("{sig}: {e}"),
        })
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused process dies of SIGKILL as well.
            let _ = child.kill();
            if let Ok(status) = child.wait() {
                self.exit = Some(status);
            }
        }
    }

    pub async fn stop(&mut self, grace: Duration) {
        if !self.is_running() {
            return;
        }
        // A paused process cannot act on SIGTERM until it is continued.
        let _ = self.signal(Signal::SIGCONT);
        let _ = self.signal(self.spec.stop_signal);
        if self.wait_exit(grace).await.is_none() && self.is_running() {
            tracing::warn!(component = %self.component, "did not stop within {grace:?}: killing");
            self.kill();
        }
    }

    /// Waits up to `timeout` for the process to end. `Some(code)` if it did
    /// (`code` is `None` when a signal ended it).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<Option<i32>> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(code) = self.exited() {
                return Some(code);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
