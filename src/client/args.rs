//! The command line: global options (allowed anywhere), one command word,
//! its arguments. Pure, so it is tested with tables.

use super::error::Error;

/// How many events `events` prints when `-n` is not given.
pub const EVENTS_DEFAULT: usize = 10;
/// How often `forward` retries a request when `--max-retries` is not given.
pub const RETRIES_DEFAULT: u32 = 10;

/// The global options that take a value.
pub const GLOBAL_VALUED: &[&str] = &["--url", "--api-key", "-p", "--profile", "--cacert"];

#[derive(Debug, Default, PartialEq)]
pub struct Globals {
    pub url: Option<String>,
    pub api_key: Option<String>,
    pub profile: Option<String>,
    /// PEM roots an `https://` server's certificate may chain to, besides the system's.
    pub cacert: Option<String>,
    /// `--insecure`: an `https://` server's certificate is not checked.
    pub insecure: bool,
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
        verify: Option<VerifyArgs>,
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
    Forward {
        source: String,
        to: String,
        /// `--to-cacert`, `--to-insecure`: for an `https://` target only.
        to_cacert: Option<String>,
        to_insecure: bool,
        cursor: Option<String>,
        max_retries: u32,
    },
    /// Print the key a server generated and keeps in its data dir.
    Key {
        data_dir: Option<String>,
    },
}

/// `create --verify SCHEME ...`: the signature check to set on the source.
#[derive(Debug, PartialEq)]
pub struct VerifyArgs {
    pub scheme: String,
    pub secret: Secret,
    pub reject_invalid: bool,
    /// `hmac-sha256` only.
    pub header: Option<String>,
    pub encoding: Option<String>,
    pub prefix: Option<String>,
}

/// Where the secret is read from: never the command line, which other
/// users can see in `ps`.
#[derive(Debug, PartialEq)]
pub enum Secret {
    Env(String),
    File(String),
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
            "--cacert" => &mut globals.cacert,
            "--insecure" => {
                globals.insecure = true;
                continue;
            }
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
        "create" => {
            let verify = args.verify_args()?;
            Command::Create { name: args.positionals(word, 1, "NAME")?.remove(0), verify }
        }
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
        "forward" => {
            let to = args.value("--to").ok_or_else(|| usage("forward: --to URL is required".to_string()))?;
            let cursor = args.value("--cursor");
            let max_retries = match args.value("--max-retries") {
                None => RETRIES_DEFAULT,
                Some(n) => n.parse().map_err(|_| usage(format!("forward: --max-retries needs a count, not {n:?}")))?,
            };
            let (to_cacert, to_insecure) = (args.value("--to-cacert"), args.to_insecure);
            let source = args.positionals(word, 1, "SOURCE --to URL")?.remove(0);
            Command::Forward { source, to, to_cacert, to_insecure, cursor, max_retries }
        }
        "key" => {
            let data_dir = args.value("--data-dir");
            args.positionals(word, 0, "[--data-dir DIR]")?;
            Command::Key { data_dir }
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
    reject_invalid: bool,
    to_insecure: bool,
    /// Options with a value (`--to URL`), as given.
    values: Vec<(&'static str, String)>,
}

/// The options with a value, per command.
const VALUED: &[(&str, &[&str])] = &[
    ("create", &["--verify", "--secret-env", "--secret-file", "--header", "--encoding", "--prefix"]),
    ("forward", &["--to", "--cursor", "--max-retries", "--to-cacert"]),
    ("key", &["--data-dir"]),
];

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
                ("create", "--reject-invalid") => args.reject_invalid = true,
                ("forward", "--to-insecure") => args.to_insecure = true,
                (_, option) => {
                    let (name, inline) = option.split_once('=').map_or((option, None), |(n, v)| (n, Some(v.to_string())));
                    let known = VALUED.iter().find(|(c, _)| *c == command).and_then(|(_, names)| names.iter().find(|n| **n == name));
                    let Some(&name) = known else { return Err(usage(format!("{command}: unknown option {arg:?}"))) };
                    let value = inline.or_else(|| rest.next().cloned()).ok_or_else(|| usage(format!("{name} needs a value")))?;
                    if args.value(name).is_some() {
                        return Err(usage(format!("{command}: {name} given twice")));
                    }
                    args.values.push((name, value));
                }
            }
        }
        Ok(args)
    }

    fn value(&self, name: &str) -> Option<String> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
    }

    /// `--verify SCHEME` and what goes with it, checked for shape (the
    /// server checks the rest).
    fn verify_args(&self) -> Result<Option<VerifyArgs>, Error> {
        let Some(scheme) = self.value("--verify") else {
            let stray =
                ["--secret-env", "--secret-file", "--header", "--encoding", "--prefix"].into_iter().find(|n| self.value(n).is_some());
            return match stray.or(self.reject_invalid.then_some("--reject-invalid")) {
                Some(name) => Err(usage(format!("create: {name} goes with --verify SCHEME"))),
                None => Ok(None),
            };
        };
        let secret = match (self.value("--secret-env"), self.value("--secret-file")) {
            (Some(var), None) => Secret::Env(var),
            (None, Some(path)) => Secret::File(path),
            _ => return Err(usage("create: --verify needs the secret from one of --secret-env VAR or --secret-file PATH".to_string())),
        };
        Ok(Some(VerifyArgs {
            scheme,
            secret,
            reject_invalid: self.reject_invalid,
            header: self.value("--header"),
            encoding: self.value("--encoding"),
            prefix: self.value("--prefix"),
        }))
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

    fn verify(scheme: &str, secret: Secret, reject_invalid: bool, header: Option<&str>) -> VerifyArgs {
        VerifyArgs { scheme: scheme.into(), secret, reject_invalid, header: header.map(Into::into), encoding: None, prefix: None }
    }

    #[test]
    fn parses_commands() {
        let cases = [
            ("list streams", Command::ListStreams),
            ("list st", Command::ListStreams),
            ("list so", Command::ListSources),
            ("create orders", Command::Create { name: "orders".into(), verify: None }),
            (
                "create hooks --verify github --secret-env GH_SECRET --reject-invalid",
                Command::Create { name: "hooks".into(), verify: Some(verify("github", Secret::Env("GH_SECRET".into()), true, None)) },
            ),
            (
                "create --verify=hmac-sha256 --secret-file /s --header X-Sig hooks",
                Command::Create {
                    name: "hooks".into(),
                    verify: Some(verify("hmac-sha256", Secret::File("/s".into()), false, Some("X-Sig"))),
                },
            ),
            (
                "forward hooks --to http://localhost:3000/x",
                Command::Forward {
                    source: "hooks".into(),
                    to: "http://localhost:3000/x".into(),
                    to_cacert: None,
                    to_insecure: false,
                    cursor: None,
                    max_retries: 10,
                },
            ),
            (
                "forward --to=http://h --cursor c.txt --max-retries 0 hooks",
                Command::Forward {
                    source: "hooks".into(),
                    to: "http://h".into(),
                    to_cacert: None,
                    to_insecure: false,
                    cursor: Some("c.txt".into()),
                    max_retries: 0,
                },
            ),
            ("delete dc_x", Command::Delete { source: "dc_x".into() }),
            ("key", Command::Key { data_dir: None }),
            ("key --data-dir /var/lib/ssehub", Command::Key { data_dir: Some("/var/lib/ssehub".into()) }),
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
        let want =
            Globals { url: Some("http://h:1".into()), api_key: Some("K".into()), profile: Some("prod".into()), ..Globals::default() };
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
            ("create --verify github orders", "--secret-env VAR or --secret-file PATH"),
            ("create --verify github --secret-env A --secret-file B orders", "--secret-env VAR or --secret-file PATH"),
            ("create --secret-env A orders", "goes with --verify"),
            ("create --reject-invalid orders", "goes with --verify"),
            ("create --verify", "--verify needs a value"),
            ("forward orders", "--to URL is required"),
            ("forward orders --to http://a --to http://b", "given twice"),
            ("forward orders --to http://a --max-retries many", "--max-retries needs a count"),
            ("forward --to http://a", "usage: ssehub forward"),
            ("events --to http://a orders", "unknown option"),
        ];
        for (line, want) in cases {
            let err = run(line).unwrap_err();
            assert!(err.contains(want), "{line}: {err}");
        }
    }
}
