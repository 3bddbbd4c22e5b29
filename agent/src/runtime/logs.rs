//! Copies a container's stdout/stderr pipes into its CRI-format log file, from a log shim
//! process per container (see [`spawn_shim`]).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

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

/// Reads `input` until EOF and appends CRI lines to `path`.
fn copy(mut input: std::fs::File, stream: &str, path: &Path) {
    let mut file = match std::fs::OpenOptions::new().create(true).append(true).open(path) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("krust log shim: cannot open {}: {e}", path.display());
            None
        }
    };
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        let (n, eof) = match input.read(&mut chunk) {
            Ok(0) => (0, true),
            Ok(n) => (n, false),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => (0, true),
        };
        buf.extend_from_slice(&chunk[..n]);
        let out = drain_lines(stream, &mut buf, eof);
        if let (false, Some(f)) = (out.is_empty(), file.as_mut()) {
            // one write per batch: O_APPEND keeps the two streams' lines whole
            if let Err(e) = f.write_all(&out) {
                eprintln!("krust log shim: writing {}: {e}", path.display());
            }
        }
        if eof {
            return;
        }
    }
}

/// Environment variable carrying a log shim's request (see [`spawn_shim`]).
pub const SHIM_ENV: &str = "KRUST_LOG_SHIM";
const SHIM_READY: &str = "KRUST-LOG-SHIM-READY";

#[derive(serde::Serialize, serde::Deserialize)]
struct ShimRequest {
    log: PathBuf,
    /// `/proc/<agent pid>/fd/<n>` of the read ends of the container's stdout and stderr
    stdout: PathBuf,
    stderr: PathBuf,
}

/// Starts the log shim of a container: a re-exec of the agent binary (`program args`) in its
/// own process group that holds the read ends of the container's stdout/stderr pipes and
/// writes them to `log` until both close. It outlives the agent, so a restarted agent's
/// containers keep being logged (and never see a broken pipe), as containerd's shims do.
/// Returns once the shim has opened both pipes (the agent's ends are then dropped).
pub(crate) fn spawn_shim(program: &Path, args: &[String], log: &Path, stdout: OwnedFd, stderr: OwnedFd) -> std::io::Result<std::process::Child> {
    use std::io::BufRead as _;
    use std::os::unix::process::CommandExt;
    // The shim opens our fds through /proc, as the runtime helper does: no fd juggling
    // between fork and exec.
    let req = ShimRequest { log: log.to_path_buf(), stdout: super::container::proc_fd(&stdout), stderr: super::container::proc_fd(&stderr) };
    let mut child = std::process::Command::new(program)
        .args(args)
        .env(SHIM_ENV, serde_json::to_string(&req).expect("json"))
        .env_remove(super::HELPER_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()?;
    // (A test binary standing in for the agent prints its own lines first.)
    let ready = child.stdout.take().is_some_and(|out| std::io::BufReader::new(out).lines().map_while(Result::ok).any(|l| l.trim() == SHIM_READY));
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        return Err(std::io::Error::other("the log shim did not start"));
    }
    drop((stdout, stderr));
    Ok(child)
}

/// If this process was started as a log shim, copies until both streams end and exits;
/// otherwise returns at once (called by `run_helper_if_requested`).
pub(crate) fn run_shim_if_requested() {
    let Some(req) = std::env::var_os(SHIM_ENV) else { return };
    let Ok(req) = serde_json::from_str::<ShimRequest>(&req.to_string_lossy()) else { std::process::exit(2) };
    let (Ok(out), Ok(err)) = (std::fs::File::open(&req.stdout), std::fs::File::open(&req.stderr)) else { std::process::exit(2) };
    println!("{SHIM_READY}");
    let threads = [(out, "stdout"), (err, "stderr")].map(|(input, stream)| {
        let log = req.log.clone();
        std::thread::spawn(move || copy(input, stream, &log))
    });
    for t in threads {
        let _ = t.join();
    }
    std::process::exit(0);
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
