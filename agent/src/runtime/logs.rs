//! The CRI log format: what a container's log shim (see `shim`) writes and `kubectl logs` reads.

use std::io::Write;
use std::path::Path;

use chrono::{SecondsFormat, Utc};

/// Lines longer than this are split into partial ("P") lines, like containerd.
pub const MAX_LINE: usize = 16 * 1024;

/// Formats one CRI log line: `<RFC3339Nano> <stream> <F|P> <content>\n`.
pub fn format_line(stream: &str, partial: bool, content: &[u8]) -> Vec<u8> {
    let ts = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
    let mut out = Vec::with_capacity(content.len() + ts.len() + 12);
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// Splits `buf` into complete lines (F) and over-long chunks (P), returning the encoded lines
/// and leaving the unfinished rest in `buf`. With `eof`, the rest is flushed as a P line.
pub fn drain_lines(stream: &str, buf: &mut Vec<u8>, eof: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let rest = &buf[start..];
        match rest.iter().position(|b| *b == b'\n') {
            Some(pos) if pos <= MAX_LINE => {
                let mut line = &rest[..pos];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                out.extend(format_line(stream, false, line));
                start += pos + 1;
            }
            _ if rest.len() > MAX_LINE => {
                out.extend(format_line(stream, true, &rest[..MAX_LINE]));
                start += MAX_LINE;
            }
            _ => break,
        }
    }
    buf.drain(..start);
    if eof && !buf.is_empty() {
        out.extend(format_line(stream, true, buf));
        buf.clear();
    }
    out
}

/// Appends one stream's output to a CRI log file, line by line.
pub(crate) struct LogWriter {
    file: Option<std::fs::File>,
    stream: &'static str,
    buf: Vec<u8>,
}

impl LogWriter {
    pub(crate) fn open(path: &Path, stream: &'static str) -> LogWriter {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path);
        if let Err(e) = &file {
            eprintln!("krust log shim: cannot open {}: {e}", path.display());
        }
        LogWriter { file: file.ok(), stream, buf: Vec::with_capacity(8192) }
    }

    /// Adds output; complete lines are written at once. `eof` flushes the rest.
    pub(crate) fn write(&mut self, chunk: &[u8], eof: bool) {
        self.buf.extend_from_slice(chunk);
        let out = drain_lines(self.stream, &mut self.buf, eof);
        if let (false, Some(f)) = (out.is_empty(), self.file.as_mut()) {
            // one write per batch: O_APPEND keeps the two streams' lines whole
            if let Err(e) = f.write_all(&out) {
                eprintln!("krust log shim: writing the log: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(out: &[u8]) -> Vec<(String, String, String)> {
        String::from_utf8_lossy(out)
            .lines()
            .map(|l| {
                let mut it = l.splitn(4, ' ');
                let _ts = it.next().unwrap();
                (
                    it.next().unwrap().to_string(),
                    it.next().unwrap().to_string(),
                    it.next().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn full_and_partial_lines() {
        let mut buf = b"hello\nwor".to_vec();
        let out = drain_lines("stdout", &mut buf, false);
        assert_eq!(
            parse(&out),
            vec![("stdout".into(), "F".into(), "hello".into())]
        );
        assert_eq!(buf, b"wor");
        buf.extend_from_slice(b"ld\r\nend");
        let out = drain_lines("stdout", &mut buf, true);
        assert_eq!(
            parse(&out),
            vec![
                ("stdout".into(), "F".into(), "world".into()),
                ("stdout".into(), "P".into(), "end".into())
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn long_lines_split() {
        let mut buf = vec![b'a'; MAX_LINE * 2 + 10];
        buf.push(b'\n');
        let out = drain_lines("stderr", &mut buf, false);
        let lines = parse(&out);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].1, "P");
        assert_eq!(lines[0].2.len(), MAX_LINE);
        assert_eq!(lines[1].1, "P");
        assert_eq!(lines[2].1, "F");
        assert_eq!(lines[2].2.len(), 10);
        assert!(buf.is_empty());
    }
}
