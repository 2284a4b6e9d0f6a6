//! Sans-I/O parser for a `text/event-stream` body, after the WHATWG rules
//! a client needs: lines end in CRLF, LF or CR, and may be split anywhere
//! across reads; `:` lines are comments (the server's handshakes); `data`
//! lines join with `\n`; a blank line ends an event. Bytes in, events out.

/// A line longer than this is not an event any ssehub server sends; the
/// stream is given up rather than buffered without end.
pub const LINE_BYTES_MAX: usize = 16 * 1024 * 1024;

#[derive(Debug, PartialEq)]
pub struct Event {
    /// The `id` field of this event's own block, if it had one.
    pub id: Option<String>,
    /// The `event` field (`gap`), if it had one.
    pub name: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The last byte was CR: a LF right after it ends nothing more.
    after_cr: bool,
    /// Past the first line, where a UTF-8 BOM may no longer be skipped.
    started: bool,
    id: Option<String>,
    name: Option<String>,
    data: Option<String>,
}

impl Parser {
    pub fn feed(&mut self, bytes: &[u8], events: &mut Vec<Event>) -> Result<(), String> {
        for &byte in bytes {
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\n' => self.end_line(events),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(events);
                }
                _ if self.line.len() >= LINE_BYTES_MAX => {
                    return Err(format!("a stream line over {LINE_BYTES_MAX} bytes"));
                }
                _ => self.line.push(byte),
            }
        }
        Ok(())
    }

    fn end_line(&mut self, events: &mut Vec<Event>) {
        let raw = std::mem::take(&mut self.line);
        let mut line = String::from_utf8_lossy(&raw);
        if !std::mem::replace(&mut self.started, true)
            && let Some(rest) = line.strip_prefix('\u{feff}')
        {
            line = rest.to_string().into();
        }
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            // The spec ignores ids with NUL so they can be echoed in a header.
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "event" => self.name = Some(value.to_string()),
            // `retry` and unknown fields do not change what is delivered.
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<Event>) {
        let (id, name) = (self.id.take(), self.name.take());
        if let Some(data) = self.data.take() {
            events.push(Event { id, name, data });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: Option<&str>, data: &str) -> Event {
        Event { id: id.map(str::to_string), name: None, data: data.to_string() }
    }

    /// Parses `wire` fed in pieces of every size; events must not depend on it.
    fn parse_all(wire: &str) -> Vec<Event> {
        let mut results = (1..=wire.len().max(1)).map(|step| {
            let mut parser = Parser::default();
            let mut events = Vec::new();
            for piece in wire.as_bytes().chunks(step) {
                parser.feed(piece, &mut events).unwrap();
            }
            events
        });
        let first = results.next().unwrap();
        for other in results {
            assert_eq!(other, first, "{wire:?}");
        }
        first
    }

    #[test]
    fn parses_streams() {
        let cases: &[(&str, Vec<Event>)] = &[
            (":sse-handshake\n\n", vec![]),
            ("id: 1-0\ndata: {\"a\":1}\n\n", vec![ev(Some("1-0"), "{\"a\":1}")]),
            ("id: 1-0\r\ndata: x\r\n\r\n", vec![ev(Some("1-0"), "x")]),
            ("id: 1-0\rdata: x\r\rdata: y\r\r", vec![ev(Some("1-0"), "x"), ev(None, "y")]),
            ("data: a\ndata: b\ndata\ndata:c\n\n", vec![ev(None, "a\nb\n\nc")]),
            ("data:  two spaces\n\n", vec![ev(None, " two spaces")]),
            ("event: x\nretry: 5\nfoo: bar\ndata: d\n\n", vec![Event { name: Some("x".into()), ..ev(None, "d") }]),
            (
                "event: gap\ndata: {}\n\nid: 1-0\ndata: 1\n\n",
                vec![Event { name: Some("gap".into()), ..ev(None, "{}") }, ev(Some("1-0"), "1")],
            ),
            ("id: 7-1\n\ndata: d\n\n", vec![ev(None, "d")]),
            ("id: a\0b\ndata: d\n\n", vec![ev(None, "d")]),
            ("data: d\nid: 2-0\n:comment\n\n", vec![ev(Some("2-0"), "d")]),
            ("\u{feff}data: bom\n\n", vec![ev(None, "bom")]),
            ("data: \u{feff}kept\n\n", vec![ev(None, "\u{feff}kept")]),
            ("data: unterminated\n", vec![]),
            (
                ":sse-handshake\n\nid: 1-0\ndata: 1\n\n:sse-handshake\n\nid: 1-1\ndata: 2\n\n",
                vec![ev(Some("1-0"), "1"), ev(Some("1-1"), "2")],
            ),
        ];
        for (wire, want) in cases {
            assert_eq!(&parse_all(wire), want, "{wire:?}");
        }
    }

    #[test]
    fn refuses_endless_lines() {
        let mut parser = Parser::default();
        let mut events = Vec::new();
        let chunk = vec![b'x'; 1024 * 1024];
        let results: Vec<_> = (0..17).map(|_| parser.feed(&chunk, &mut events)).collect();
        assert!(results[..16].iter().all(Result::is_ok));
        assert!(results[16].is_err());
    }
}
