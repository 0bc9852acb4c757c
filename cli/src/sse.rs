//! A reader of server-sent events (the `text/event-stream` format of `GET /v1/events`).

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its type (`message` when unnamed).
    pub name: String,
    /// Its data lines, joined by newlines.
    pub data: String,
}

/// Cuts a byte stream into events.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    name: Option<String>,
    data: Option<String>,
}

/// The most bytes one line may hold (a line past it is dropped, not buffered without end).
const MAX_LINE: usize = 8 << 20;

impl Parser {
    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.take_line(&String::from_utf8_lossy(&line), &mut out);
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
        out
    }

    fn take_line(&mut self, line: &str, out: &mut Vec<Event>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(Event { name: self.name.take().unwrap_or_else(|| "message".into()), data });
            }
            self.name = None;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = line.split_once(':').map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
        match field {
            "event" => self.name = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_wherever_the_bytes_break() {
        let stream = b": keep-alive\n\nevent: deploy\nid: 1\ndata: {\"a\":1}\n\nevent: agents\r\ndata: x\r\ndata: y\r\n\r\ndata: plain\n\n";
        for cut in 0..stream.len() {
            let mut p = Parser::default();
            let mut events = p.feed(&stream[..cut]);
            events.extend(p.feed(&stream[cut..]));
            assert_eq!(
                events,
                [
                    Event { name: "deploy".into(), data: "{\"a\":1}".into() },
                    Event { name: "agents".into(), data: "x\ny".into() },
                    Event { name: "message".into(), data: "plain".into() },
                ],
                "cut at {cut}"
            );
        }
    }
}
