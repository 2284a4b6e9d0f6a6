//! Node.js for the client tests: tests/js's npm packages, installed once.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

/// Debian's Chromium, which the browser tests drive through playwright-core.
pub const CHROMIUM: &str = "/usr/bin/chromium";

pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// The test set-up: installs tests/js's npm packages (`npm ci`) unless an
/// install at least as new as the lock file is there. Once per process; a
/// file lock makes concurrent test processes (several binaries, nextest)
/// take turns. A failure fails every client test with the same message.
pub fn npm_setup() {
    static SETUP: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = SETUP.get_or_init(npm_install) {
        panic!("{e}");
    }
}

fn npm_install() -> Result<(), String> {
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("`node` is not on PATH: the client tests need Node.js and npm".into());
    }
    let lock_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tests-js-npm.lock");
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    let dir = js_dir();
    let modified = |p: PathBuf| p.metadata().and_then(|m| m.modified()).ok();
    let lockfile = modified(dir.join("package-lock.json"));
    // npm writes node_modules/.package-lock.json last, so it marks a complete install.
    let installed = modified(dir.join("node_modules/.package-lock.json"));
    if installed.is_some() && installed >= lockfile {
        return Ok(());
    }
    let command = if lockfile.is_some() { "ci" } else { "install" };
    let out = Command::new("npm")
        .args([command, "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `npm {command}` in {}: {e}", dir.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`npm {command}` in {} failed ({}):\n{}{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A node script's stderr, gathered whole by a thread (for failure messages).
pub fn gather(mut pipe: ChildStderr) -> Arc<Mutex<String>> {
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = stderr.clone();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        sink.lock().unwrap().push_str(&text);
    });
    stderr
}
