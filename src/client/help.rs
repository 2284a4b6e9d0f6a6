//! The `--help` texts, for the whole and for each command.

const MAIN: &str = "\
ssehub: private Server-Sent Events streams for event sources

Usage:
  ssehub [serve] [SERVER OPTIONS]     run the server ('ssehub serve --help')
  ssehub [OPTIONS] COMMAND [ARGS]     talk to a running server

Commands:
  list streams (st)        table of streams: NAME  TYPE  VISIBILITY  SSE
  list sources (so)        table of sources: ID  NAME  ENDPOINT
  create NAME              create a source
  delete SOURCE            delete a source; its streams end
  describe SOURCE          a source's id, name, URLs and creation time
  emit SOURCE [JSON]       emit one JSON event (stdin if no JSON); prints its id
  events [-n N] [-f] SOURCE
                           the last N events, oldest first; -f follows
  help [COMMAND]           this text, or one command's

A SOURCE is a source's id or its name.

Options, anywhere on the line:
  --url URL                server base URL (default http://127.0.0.1:8080)
  --api-key KEY            API key
  -p, --profile NAME       use section [NAME] of the config file
  -h, --help               help for ssehub or for a command
  -V, --version            print the version

Configuration, first found wins: --url and --api-key; the -p profile's url
and api_key; SSEHUB_URL and SSEHUB_API_KEY; url and api_key at the top of
$XDG_CONFIG_HOME/ssehub/config (default ~/.config/ssehub/config):

  url = http://127.0.0.1:8080
  api_key = dev-key
  [prod]
  url = http://events.internal:8080
  api_key = prod-key

Results go to stdout; notices and errors to stderr, one line each.
Exit status: 0 success, 1 failure (cannot connect, 401, 404, ...),
2 bad usage or configuration.";

const LIST: &str = "\
Usage: ssehub list streams|st
       ssehub list sources|so

'streams' prints a table NAME  TYPE  VISIBILITY  SSE with one row per
source of the account (TYPE is http, VISIBILITY private, SSE the stream's
URL). 'sources' prints ID  NAME  ENDPOINT, the endpoint being the URL that
turns any HTTP request into an event (webhooks).";

const CREATE: &str = "\
Usage: ssehub create NAME

Creates a source named NAME ([A-Za-z0-9_-], up to 64 characters, unique
in the account) and prints it as 'describe' does.";

const DELETE: &str = "\
Usage: ssehub delete SOURCE

Deletes the source (id or name); its open streams end. Prints nothing.";

const DESCRIBE: &str = "\
Usage: ssehub describe SOURCE

Prints the source's id, name, sse_url, endpoint_url and created_at.";

const EMIT: &str = "\
Usage: ssehub emit [--lines] SOURCE [JSON]

Emits JSON as one event of SOURCE and prints the event's id. Without JSON
the event is read from stdin. Invalid JSON is refused before anything is
sent. Put '--' before a JSON argument that starts with '-' and is not a
number.

  --lines    read stdin as one event per line (blank lines skipped); each
             line is checked before it is sent, and the first bad one stops

Examples:
  ssehub emit orders '{\"id\":1,\"total\":9.5}'
  echo '[1,2,3]' | ssehub emit orders
  ssehub emit --lines orders < events.jsonl";

const EVENTS: &str = "\
Usage: ssehub events [-n N] [-f] [--envelope] SOURCE

Prints the last N events of SOURCE, oldest first, one compact JSON payload
per line (what was emitted), so '> file' saves them.

  -n, --limit N   how many past events (default 10; at most what the
                  server keeps, its --history)
  -f, --follow    then follow the stream until Ctrl-C (exit status 0)
  --envelope      print whole envelopes {\"id\",\"indexed_at_ms\",\"event\",
                  \"metadata\"} instead of payloads

Following never loses or repeats an event: every connection resumes after
the last printed id (Last-Event-ID). A lost connection is retried after
1 s, doubling to 30 s, back to 1 s after a good connection; 45 s without a
byte (three missed handshakes) counts as lost. 401 and 404 stop it with a
message and exit status 1. Notices go to stderr.

SSEHUB_IDLE_TIMEOUT_MS overrides the 45 s (a knob for tests).";

/// The help for `topic` (a command word), or the main help.
pub fn text(topic: Option<&str>) -> Result<&'static str, String> {
    match topic {
        None => Ok(MAIN),
        Some("list") => Ok(LIST),
        Some("create") => Ok(CREATE),
        Some("delete") => Ok(DELETE),
        Some("describe") => Ok(DESCRIBE),
        Some("emit") => Ok(EMIT),
        Some("events") => Ok(EVENTS),
        Some("help") => Ok(MAIN),
        Some("serve") => Err("for the server's options run 'ssehub serve --help'".to_string()),
        Some(other) => Err(format!("no help for {other:?}: not a command (see 'ssehub --help')")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_help() {
        for command in super::super::COMMANDS {
            let text = text(Some(command)).unwrap();
            assert!(text.starts_with("Usage") || text.starts_with("ssehub"), "{command}");
            assert!(MAIN.contains(command), "{command} missing from the main help");
        }
    }
}
