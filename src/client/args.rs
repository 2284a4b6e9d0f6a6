//! The command line: global options (allowed anywhere), one command word,
//! its arguments. Pure, so it is tested with tables.

use super::error::Error;

/// How many events `events` prints when `-n` is not given.
pub const EVENTS_DEFAULT: usize = 10;

#[derive(Debug, Default, PartialEq)]
pub struct Globals {
    pub url: Option<String>,
    pub api_key: Option<String>,
    pub profile: Option<String>,
}

#[derive(Debug, PartialEq)]
pub enum Command {
    /// Help for everything, or for one command.
    Help(Option<String>),
    Version,
    ListStreams,
    ListSources,
    Create {
        name: String,
    },
    Delete {
        source: String,
    },
    Describe {
        source: String,
    },
    /// `json` is `None` for stdin; `lines` reads one event per stdin line.
    Emit {
        source: String,
        json: Option<String>,
        lines: bool,
    },
    Events {
        source: String,
        limit: usize,
        follow: bool,
        envelope: bool,
    },
}

pub fn parse(args: &[String]) -> Result<(Globals, Command), Error> {
    let mut globals = Globals::default();
    let (mut help, mut version) = (false, false);
    let mut rest = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let slot = match flag {
            "--url" => &mut globals.url,
            "--api-key" => &mut globals.api_key,
            "-p" | "--profile" => &mut globals.profile,
            "-h" | "--help" => {
                help = true;
                continue;
            }
            "-V" | "--version" => {
                version = true;
                continue;
            }
            "--" => {
                // Everything after it is the command's, even if it looks like an option.
                rest.push(arg.clone());
                rest.extend(args.by_ref().cloned());
                break;
            }
            _ => {
                rest.push(arg.clone());
                continue;
            }
        };
        let value = inline.or_else(|| args.next().cloned());
        *slot = Some(value.ok_or_else(|| usage(format!("{flag} needs a value")))?);
    }

    let Some((word, rest)) = rest.split_first() else {
        return match (help, version) {
            (_, true) => Ok((globals, Command::Version)),
            (true, _) => Ok((globals, Command::Help(None))),
            _ => Err(usage("no command given".to_string())),
        };
    };
    let command = match word.as_str() {
        "help" => Command::Help(rest.first().cloned()),
        _ if help => Command::Help(Some(word.clone())),
        _ => command(word, rest)?,
    };
    Ok((globals, command))
}

fn command(word: &str, rest: &[String]) -> Result<Command, Error> {
    let args = Args::split(word, rest)?;
    let command = match word {
        "list" => match args.positionals(word, 1, "streams|sources")?[0].as_str() {
            "streams" | "st" => Command::ListStreams,
            "sources" | "so" => Command::ListSources,
            other => {
                return Err(usage(format!("cannot list {other:?}: say 'streams' (st) or 'sources' (so)")));
            }
        },
        "create" => Command::Create { name: args.positionals(word, 1, "NAME")?.remove(0) },
        "delete" => Command::Delete { source: args.positionals(word, 1, "SOURCE")?.remove(0) },
        "describe" => Command::Describe { source: args.positionals(word, 1, "SOURCE")?.remove(0) },
        "emit" => {
            let lines = args.lines;
            let mut words = args.positionals_between(word, 1, 2, "SOURCE [JSON]")?;
            let json = (words.len() == 2).then(|| words.remove(1));
            if lines && json.is_some() {
                return Err(usage("emit: --lines reads stdin; give no JSON argument with it".to_string()));
            }
            Command::Emit { source: words.remove(0), json, lines }
        }
        "events" => {
            let limit = match &args.limit {
                None => EVENTS_DEFAULT,
                Some(n) => n.parse().map_err(|_| usage(format!("events: -n needs a count, not {n:?}")))?,
            };
            let (follow, envelope) = (args.follow, args.envelope);
            Command::Events { source: args.positionals(word, 1, "SOURCE")?.remove(0), limit, follow, envelope }
        }
        other => return Err(usage(format!("unknown command {other:?}"))),
    };
    Ok(command)
}

/// A command's arguments: its options taken out, the words left in order.
#[derive(Default)]
struct Args {
    words: Vec<String>,
    follow: bool,
    envelope: bool,
    lines: bool,
    limit: Option<String>,
}

impl Args {
    fn split(command: &str, rest: &[String]) -> Result<Args, Error> {
        let mut args = Args::default();
        let mut rest = rest.iter();
        while let Some(arg) = rest.next() {
            if !looks_like_option(arg) {
                args.words.push(arg.clone());
                continue;
            }
            match (command, arg.as_str()) {
                (_, "--") => args.words.extend(rest.by_ref().cloned()),
                ("events", "-f" | "--follow") => args.follow = true,
                ("events", "--envelope") => args.envelope = true,
                ("events", "-n" | "--limit") => {
                    let value = rest.next().ok_or_else(|| usage(format!("{arg} needs a count")))?;
                    args.limit = Some(value.clone());
                }
                ("events", other) if other.starts_with("--limit=") => args.limit = Some(other[8..].to_string()),
                ("events", other) if other.starts_with("-n") => args.limit = Some(other[2..].to_string()),
                ("emit", "--lines") => args.lines = true,
                _ => return Err(usage(format!("{command}: unknown option {arg:?}"))),
            }
        }
        Ok(args)
    }

    fn positionals(self, command: &str, count: usize, shape: &str) -> Result<Vec<String>, Error> {
        self.positionals_between(command, count, count, shape)
    }

    fn positionals_between(self, command: &str, min: usize, max: usize, shape: &str) -> Result<Vec<String>, Error> {
        match (min..=max).contains(&self.words.len()) {
            true => Ok(self.words),
            false => Err(usage(format!("usage: ssehub {command} {shape} (see 'ssehub {command} --help')"))),
        }
    }
}

/// `-1` or `-2.5` is a JSON number to emit, not an option.
fn looks_like_option(arg: &str) -> bool {
    let mut chars = arg.chars();
    chars.next() == Some('-') && chars.next().is_some_and(|c| !c.is_ascii_digit())
}

fn usage(message: String) -> Error {
    Error::Usage(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Result<(Globals, Command), String> {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        parse(&args).map_err(|e| e.to_string())
    }

    fn cmd(line: &str) -> Command {
        run(line).unwrap().1
    }

    fn events(source: &str, limit: usize, follow: bool, envelope: bool) -> Command {
        Command::Events { source: source.into(), limit, follow, envelope }
    }

    #[test]
    fn parses_commands() {
        let cases = [
            ("list streams", Command::ListStreams),
            ("list st", Command::ListStreams),
            ("list so", Command::ListSources),
            ("create orders", Command::Create { name: "orders".into() }),
            ("delete dc_x", Command::Delete { source: "dc_x".into() }),
            ("describe orders", Command::Describe { source: "orders".into() }),
            ("emit orders", Command::Emit { source: "orders".into(), json: None, lines: false }),
            ("emit orders {\"a\":1}", Command::Emit { source: "orders".into(), json: Some("{\"a\":1}".into()), lines: false }),
            ("emit orders -1", Command::Emit { source: "orders".into(), json: Some("-1".into()), lines: false }),
            ("emit --lines orders", Command::Emit { source: "orders".into(), json: None, lines: true }),
            ("events orders", events("orders", 10, false, false)),
            ("events -f -n 3 orders", events("orders", 3, true, false)),
            ("events orders -n0 --follow --envelope", events("orders", 0, true, true)),
            ("events --limit=5 orders", events("orders", 5, false, false)),
            ("events -- -odd-name", events("-odd-name", 10, false, false)),
            ("--help", Command::Help(None)),
            ("-V", Command::Version),
            ("help", Command::Help(None)),
            ("help events", Command::Help(Some("events".into()))),
            ("events --help", Command::Help(Some("events".into()))),
            ("-h emit orders", Command::Help(Some("emit".into()))),
        ];
        for (line, want) in cases {
            assert_eq!(cmd(line), want, "{line}");
        }
    }

    #[test]
    fn takes_global_options_anywhere() {
        let (globals, command) = run("-p prod events -f --url=http://h:1 orders --api-key K").unwrap();
        assert_eq!(command, events("orders", 10, true, false));
        let want = Globals { url: Some("http://h:1".into()), api_key: Some("K".into()), profile: Some("prod".into()) };
        assert_eq!(globals, want);
        // A profile may be named like a command.
        let (globals, command) = run("--profile events list st").unwrap();
        assert_eq!((globals.profile.as_deref(), command), (Some("events"), Command::ListStreams));
    }

    #[test]
    fn refuses_bad_lines() {
        let cases = [
            ("", "no command"),
            ("-p", "-p needs a value"),
            ("frobnicate", "unknown command"),
            ("list", "usage: ssehub list"),
            ("list things", "cannot list"),
            ("create", "usage: ssehub create NAME"),
            ("create a b", "usage: ssehub create NAME"),
            ("emit", "usage: ssehub emit"),
            ("emit orders 1 2", "usage: ssehub emit"),
            ("emit --lines orders 1", "--lines reads stdin"),
            ("events -n x orders", "-n needs a count"),
            ("events -n", "-n needs a count"),
            ("events -x orders", "unknown option"),
            ("create -f orders", "unknown option"),
        ];
        for (line, want) in cases {
            let err = run(line).unwrap_err();
            assert!(err.contains(want), "{line}: {err}");
        }
    }
}
