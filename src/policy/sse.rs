//! Server-Sent Events, one whole event at a time, for rewriting the few events that carry a
//! `tools/list` result while every other event passes byte for byte, as soon as it is complete.

/// Cuts a stream of bytes into events, each with the blank line that ends it. Lines end with
/// `\r\n`, `\n` or `\r` (the SSE grammar); a `\r` at the end of what has arrived so far waits for
/// the next byte, since it may be the first half of `\r\n`.
#[derive(Debug)]
pub struct EventSplitter {
    buf: Vec<u8>,
    /// Where the search for the next line end resumes.
    scan: usize,
    line_start: usize,
    max_event: usize,
}

/// An event longer than the limit (with no end in sight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTooLarge;

impl EventSplitter {
    pub fn new(max_event: usize) -> Self {
        Self {
            buf: Vec::new(),
            scan: 0,
            line_start: 0,
            max_event,
        }
    }

    /// Adds what arrived; returns the events it completed, in order, unchanged.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, EventTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(offset) = self.buf[self.scan..]
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')
        {
            let at = self.scan + offset;
            let end = match (self.buf[at], self.buf.get(at + 1)) {
                (b'\r', None) => {
                    self.scan = at;
                    break;
                }
                (b'\r', Some(b'\n')) => at + 2,
                _ => at + 1,
            };
            let blank = at == self.line_start;
            self.scan = end;
            self.line_start = end;
            if blank {
                events.push(self.buf.drain(..end).collect());
                self.scan = 0;
                self.line_start = 0;
            }
        }
        if self.buf.len() > self.max_event {
            return Err(EventTooLarge);
        }
        Ok(events)
    }

    /// The end of the stream: what is left, an event without its blank line, if anything.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        self.scan = 0;
        self.line_start = 0;
        (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf))
    }
}

/// The event with its data replaced by what `rewrite` makes of it, or `None` (keep the event as
/// it is) when it has no data or `rewrite` declines. The other fields keep their order; the new
/// data goes where the first `data:` line was (one line per line of it).
pub fn rewrite_event(
    event: &[u8],
    rewrite: impl FnOnce(&str) -> Option<String>,
) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(event);
    let lines: Vec<&str> = text
        .split_inclusive(['\n', '\r'])
        .map(|l| l.trim_end_matches(['\n', '\r']))
        .collect();
    let mut data: Option<String> = None;
    for line in &lines {
        if let Some(value) = data_value(line) {
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        }
    }
    let new_data = rewrite(&data?)?;
    let mut out = String::with_capacity(new_data.len() + 64);
    let mut placed = false;
    for line in lines.iter().filter(|l| !l.is_empty()) {
        if data_value(line).is_some() {
            if !placed {
                for data_line in new_data.split('\n') {
                    out.push_str("data: ");
                    out.push_str(data_line.trim_end_matches('\r'));
                    out.push('\n');
                }
                placed = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push('\n');
    Some(out.into_bytes())
}

/// The value of a `data` field line (one leading space dropped), or `None` for other lines.
fn data_value(line: &str) -> Option<&str> {
    if line == "data" {
        return Some("");
    }
    let value = line.strip_prefix("data:")?;
    Some(value.strip_prefix(' ').unwrap_or(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = ": keep-alive\n\nevent: message\nid: 1\ndata: {\"a\":1}\n\nevent: message\r\ndata: {\"b\":\r\ndata: 2}\r\n\r\ndata: x\r\rdata: tail";

    fn split_all(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = EventSplitter::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(s.push(c).unwrap());
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn events_are_cut_at_blank_lines_whatever_the_chunking() {
        let whole = split_all(&[STREAM.as_bytes()]);
        let texts: Vec<String> = whole
            .iter()
            .map(|e| String::from_utf8(e.clone()).unwrap())
            .collect();
        assert_eq!(
            texts,
            [
                ": keep-alive\n\n",
                "event: message\nid: 1\ndata: {\"a\":1}\n\n",
                "event: message\r\ndata: {\"b\":\r\ndata: 2}\r\n\r\n",
                "data: x\r\r",
                "data: tail",
            ]
        );
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            assert_eq!(
                split_all(&[&bytes[..cut], &bytes[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(split_all(&one_by_one), whole);
        assert_eq!(whole.concat(), bytes, "nothing added or lost");
    }

    #[test]
    fn a_cr_lf_split_across_chunks_is_one_line_end() {
        let mut s = EventSplitter::new(1024);
        assert!(s.push(b"data: a\r").unwrap().is_empty());
        assert!(s.push(b"\n").unwrap().is_empty(), "not a blank line");
        assert_eq!(s.push(b"\r\n").unwrap(), vec![b"data: a\r\n\r\n".to_vec()]);
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut s = EventSplitter::new(16);
        assert!(s.push(b"data: 0123456").is_ok());
        assert_eq!(s.push(b"789abcdef"), Err(EventTooLarge));
    }

    #[test]
    fn rewriting_keeps_the_other_fields() {
        let event = b"event: message\r\nid: 7\r\ndata: {\"b\":\r\ndata: 2}\r\nretry: 5\r\n\r\n";
        let out = rewrite_event(event, |d| {
            assert_eq!(d, "{\"b\":\n2}");
            Some("{\"c\":3}".into())
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: message\nid: 7\ndata: {\"c\":3}\nretry: 5\n\n"
        );
        assert_eq!(rewrite_event(b": comment\n\n", |_| Some("x".into())), None);
        assert_eq!(rewrite_event(b"data: a\n\n", |_| None), None);
        assert_eq!(
            rewrite_event(b"data:a\ndata\n\n", |d| Some(format!("[{d}]"))).unwrap(),
            b"data: [a\ndata: ]\n\n",
            "a line break in the new data is a new data line"
        );
    }
}
