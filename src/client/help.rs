//! The `--help` texts, for the whole and for each command.

const MAIN: &str = "\
ssehub: private Server-Sent Events streams for event sources

Usage:
  ssehub [serve] [SERVER OPTIONS]     run the server ('ssehub serve --help')
  ssehub [OPTIONS] COMMAND [ARGS]     talk to a running server

Commands:
  list streams (st)        table of streams: NAME  TYPE  VISIBILITY  SSE
  list sources (so)        table of sources: ID  NAME  ENDPOINT
  create NAME [--verify SCHEME --secret-env VAR]
                           create a source, optionally checking webhook signatures
  delete SOURCE            delete a source; its streams end
  describe SOURCE          a source's id, name, URLs and creation time
  emit SOURCE [JSON]       emit one JSON event (stdin if no JSON); prints its id
  events [-n N] [-f] SOURCE
                           the last N events, oldest first; -f follows
  forward SOURCE --to URL [--cursor FILE]
                           replay each new event as an HTTP request to URL
  key [--data-dir DIR]     print the key a server generated and keeps in DIR
  help [COMMAND]           this text, or one command's

A SOURCE is a source's id or its name.

Options, anywhere on the line:
  --url URL                server base URL, http:// or https:// (default
                           http://127.0.0.1:8080)
  --api-key KEY            API key
  --cacert FILE            trust the PEM CA certificates in FILE for an
                           https:// server, besides the system's
  --insecure               do not verify an https:// server's certificate
  -p, --profile NAME       use section [NAME] of the config file
  -h, --help               help for ssehub or for a command
  -V, --version            print the version

Configuration, first found wins: --url, --api-key and --cacert; the -p
profile's url, api_key and cacert; SSEHUB_URL, SSEHUB_API_KEY and
SSEHUB_CACERT; url, api_key and cacert at the top of
$XDG_CONFIG_HOME/ssehub/config (default ~/.config/ssehub/config).
SSEHUB_INSECURE=1 is --insecure.

  url = http://127.0.0.1:8080
  api_key = dev-key
  [prod]
  url = https://events.example.com
  api_key = prod-key
  cacert = /etc/ssehub/ca.pem

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
Usage: ssehub create NAME [--verify SCHEME (--secret-env VAR | --secret-file PATH)
                          [--reject-invalid] [--header H] [--encoding hex|base64] [--prefix P]]

Creates a source named NAME ([A-Za-z0-9_-], up to 64 characters, unique
in the account) and prints it as 'describe' does.

  --verify SCHEME       check the signature of every webhook delivery on
                        arrival: github (X-Hub-Signature-256), stripe
                        (Stripe-Signature), standard-webhooks (webhook-id,
                        webhook-timestamp, webhook-signature), or
                        hmac-sha256 (HMAC-SHA256 of the body in --header)
  --secret-env VAR      the signing secret, from this environment variable
  --secret-file PATH    ... or from this file (a trailing newline is dropped)
  --reject-invalid      answer invalid deliveries 401 and emit nothing
                        (without it they are events marked \"valid\":false)
  --header H            hmac-sha256: the header with the signature
  --encoding E          hmac-sha256: hex (default) or base64
  --prefix P            hmac-sha256: text before the signature, e.g. sha256=

Each event of a delivery then carries \"signature\":{\"scheme\",\"valid\"[,\"reason\"]}.
The secret is never shown again, by the API or the CLI.

Example:
  GH_SECRET=... ssehub create github --verify github --secret-env GH_SECRET";

const DELETE: &str = "\
Usage: ssehub delete SOURCE

Deletes the source (id or name); its open streams end. Prints nothing.";

const DESCRIBE: &str = "\
Usage: ssehub describe SOURCE

Prints the source's id, name, sse_url, endpoint_url, created_at and its
signature check (verify), if any.";

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
                  server keeps, its --history: when older events were
                  dropped and fewer than N are printed, stderr says so)
  -f, --follow    then follow the stream until Ctrl-C (exit status 0)
  --envelope      print whole envelopes {\"id\",\"indexed_at_ms\",\"event\",
                  \"metadata\"} instead of payloads

Following never loses or repeats an event: every connection resumes after
the last printed id (Last-Event-ID). A lost connection is retried after
1 s, doubling to 30 s, back to 1 s after a good connection; 45 s without a
byte (three missed handshakes) counts as lost. 401 and 404 stop it with a
message and exit status 1. Notices go to stderr.

SSEHUB_IDLE_TIMEOUT_MS overrides the 45 s (a knob for tests).";

const FORWARD: &str = "\
Usage: ssehub forward SOURCE --to URL [--cursor FILE] [--max-retries N]
                      [--to-cacert FILE] [--to-insecure]

Follows SOURCE as 'events -f' does and replays every new event as an HTTP
request to URL, such as http://localhost:3000/hooks. An https:// URL's
certificate is verified against the system's roots plus --to-cacert.

A webhook event (a request to the source's endpoint URL) is sent as the
original request: its method, its path after the endpoint key appended to
URL's path (dot segments resolved first, so it never leaves URL's path:
/../admin arrives as <URL's path>/admin), URL's own query if it has one
then the original query, its headers except hop-by-hop ones and Host and
Content-Length, and the exact body bytes, so the sender's signature still
verifies. Any other event is a POST of its JSON (application/json). Every
request carries ssehub-event-id: <event id>.

Anyone who has the source's endpoint URL chooses the method, path, query,
headers and body that reach URL: treat it as a secret, and forward only
to a server meant to receive them.

One request at a time, in order. A connection error or a 429, 500, 502,
503 or 504 answer is retried after 1 s, doubling up to 30 s, or after the
target's Retry-After (seconds or a date; at most 10 minutes), at most
--max-retries times (default 10); then it is reported on stderr and
skipped. Any other status is final. Each request prints one line on
stdout:
  <id> <METHOD> <path> -> <status> (<ms> ms)

  --to URL            where to send (required); a query of its own is sent
                      before each event's query
  --cursor FILE       keep the last forwarded id in FILE (written anew after
                      each answer); a restarted forward resumes after it,
                      from the server's history, then live. Without it,
                      forwarding starts with events that arrive from now on.
  --max-retries N     retries of one event before it is skipped (default 10)
  --to-cacert FILE    trust the PEM CA certificates in FILE for an https://
                      URL (a local receiver's own CA)
  --to-insecure       do not verify an https:// URL's certificate (said on
                      stderr once); --cacert and --insecure are the server's

Lost connections to the server are retried as 'events -f' does. Ctrl-C
exits 0, once a request in flight has its answer (at most 30 s).
SSEHUB_FORWARD_BACKOFF_MS sets the first retry delay in ms (the cap is 30
times it; a Retry-After is honoured as given): a knob for tests.";

const KEY: &str = "\
Usage: ssehub key [--data-dir DIR]

Prints the API key that a server started in DIR without --api-key or
--keys-file generated and keeps there (in DIR/key, mode 0600), so that

  export SSEHUB_API_KEY=$(ssehub key)

sets up the CLI for the server of the current directory. DIR is --data-dir,
else SSEHUB_DATA_DIR, else ./ssehub-data (the server's default). No key
kept there: one line on stderr, exit status 1.";

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
        Some("forward") => Ok(FORWARD),
        Some("key") => Ok(KEY),
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
