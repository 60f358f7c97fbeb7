//! A Server-Sent Events parser, fed the body's chunks as they arrive (the HTML standard's
//! event stream format: `event:`, `data:`, `id:`, `retry:` fields, comments starting with
//! `:`, events ended by a blank line, lines by LF, CRLF or CR).

/// One dispatched event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `message` when the stream names none.
    pub event: String,
    pub data: String,
    pub id: Option<String>,
    /// A reconnection delay the server asked for, in milliseconds.
    pub retry: Option<u64>,
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not ended yet (a chunk may end mid-line, mid-character even).
    partial: Vec<u8>,
    /// The last byte ended a line with CR: a LF right after it belongs to that ending.
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
}

impl SseParser {
    /// Feeds `chunk`; returns the events it completes. A `retry:` alone (the stream's
    /// goodbye here) is dispatched as an event with empty data so the caller sees it.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in chunk {
            let after_cr = std::mem::replace(&mut self.after_cr, false);
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.partial);
                    if let Some(event) = self.line(&String::from_utf8_lossy(&line)) {
                        events.push(event);
                    }
                }
                _ => self.partial.push(byte),
            }
        }
        events
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "retry" => self.retry = value.parse().ok(),
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        let data = self.data.take();
        let retry = self.retry.take();
        if data.is_none() && retry.is_none() {
            return None;
        }
        Some(SseEvent {
            event: event.unwrap_or_else(|| "message".to_owned()),
            data: data.unwrap_or_default(),
            // The last event id persists across events, as a browser keeps it.
            id: self.id.clone(),
            retry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_line_endings_are_parsed_whole() {
        let stream = "event: video\nid: 3\ndata: {\"status\":\"queued\"}\n\n: keep-alive\n\r\nevent:video\r\nid:4\r\ndata: {\"status\":\r\ndata: \"running\"}\r\n\r\nretry: 2500\n\n";
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        // One byte at a time: every boundary falls mid-something at some point.
        for byte in stream.as_bytes() {
            events.extend(parser.feed(std::slice::from_ref(byte)));
        }
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0].event, "video");
        assert_eq!(events[0].id.as_deref(), Some("3"));
        assert_eq!(events[0].data, "{\"status\":\"queued\"}");
        assert_eq!(events[1].id.as_deref(), Some("4"));
        assert_eq!(events[1].data, "{\"status\":\n\"running\"}");
        assert_eq!(events[2].retry, Some(2500));
        assert_eq!(events[2].data, "");
    }

    #[test]
    fn comments_alone_dispatch_nothing() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b": ping\n\n:\n\n").is_empty());
    }
}
