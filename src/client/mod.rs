//! The command-line client (placeholder until the CLI lands).

pub const COMMANDS: &[&str] = &["list", "create", "delete", "describe", "emit", "events"];

pub fn main(_args: Vec<String>) -> i32 {
    eprintln!("ssehub: client commands are not built yet");
    2
}
