//! Container log files: append-only JSON lines like Docker's json-file driver
//! (`{"log":"...","stream":"stdout","time":"RFC3339Nano"}`), rotated as
//! `log`, `log.1` … `log.N-1` so disk use is capped at about size × files.
//!
//! Hand-written rather than a logging crate: the format and rotation scheme
//! are dictated by Docker compatibility, and the reader has to follow a file
//! across rotations, which generic log crates don't do.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Longest piece of a line without newline that is kept back before being
/// written as its own record (bounds memory for output without newlines).
pub const MAX_PARTIAL: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("corrupt log record in {path}: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    log: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    stream: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    time: std::borrow::Cow<'a, str>,
}

/// A record as written: borrowed fields, in Docker's order (log, stream, time).
#[derive(Serialize)]
struct RecordOut<'a> {
    log: &'a str,
    stream: &'a str,
    time: &'a str,
}

/// Write buffer of the log file. The shim flushes once per chunk read from the container
/// (at most [`READ_CHUNK`]), so a chunk's records normally go out in one `write`.
const WRITE_BUF: usize = 256 * 1024;

/// Read size of the log reader: one syscall per this much of a log file.
const READ_BUF: usize = 64 * 1024;

/// How much the shim reads from a container's output pipe at once.
pub const READ_CHUNK: usize = 128 * 1024;

/// Writes records and rotates files.
pub struct LogWriter {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    out: BufWriter<File>,
    size: u64,
    /// The encoded record being written (reused: no allocation per line).
    scratch: Vec<u8>,
    /// `time` of the last record and its RFC 3339 form: the records of one chunk share it.
    time: Option<(DateTime<Utc>, String)>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o640).open(path)
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl LogWriter {
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let f = open_append(path)?;
        let size = f.metadata()?.len();
        Ok(LogWriter {
            path: path.to_owned(),
            max_size: max_size.max(1),
            max_files: max_files.max(1),
            out: BufWriter::with_capacity(WRITE_BUF, f),
            size,
            scratch: Vec::with_capacity(4096),
            time: None,
        })
    }

    /// Append one record (`data` is a full line including its newline, or a chunk).
    /// Invalid UTF-8 becomes U+FFFD, as in Docker's json-file driver.
    pub fn write_entry(&mut self, stream: &str, data: &[u8], time: DateTime<Utc>) -> io::Result<()> {
        if self.time.as_ref().is_none_or(|(t, _)| *t != time) {
            self.time = Some((time, time.to_rfc3339_opts(SecondsFormat::Nanos, true)));
        }
        let time = self.time.as_ref().map_or("", |(_, s)| s.as_str());
        let log = String::from_utf8_lossy(data);
        self.scratch.clear();
        serde_json::to_writer(&mut self.scratch, &RecordOut { log: &log, stream, time }).map_err(io::Error::other)?;
        self.scratch.push(b'\n');
        let len = self.scratch.len() as u64;
        if self.size > 0 && self.size + len > self.max_size {
            self.rotate()?;
        }
        self.out.write_all(&self.scratch)?;
        self.size += len;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The live log file (rotated ones are `<path>.1`, `<path>.2`, ...).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        if self.max_files > 1 {
            let _ = fs::remove_file(rotated(&self.path, self.max_files - 1));
            for n in (1..self.max_files - 1).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            fs::rename(&self.path, rotated(&self.path, 1))?;
        } else {
            fs::remove_file(&self.path)?;
        }
        self.out = BufWriter::with_capacity(WRITE_BUF, open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

/// Cuts a byte stream into lines; pieces longer than [`MAX_PARTIAL`] without a
/// newline are emitted as chunks of their own.
#[derive(Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, data: &[u8], mut emit: impl FnMut(&[u8])) {
        let mut data = data;
        while let Some(i) = memchr::memchr(b'\n', data) {
            if self.buf.is_empty() {
                emit(&data[..=i]);
            } else {
                self.buf.extend_from_slice(&data[..=i]);
                emit(&self.buf);
                self.buf.clear();
            }
            data = &data[i + 1..];
        }
        self.buf.extend_from_slice(data);
        while self.buf.len() >= MAX_PARTIAL {
            emit(&self.buf[..MAX_PARTIAL]);
            self.buf.drain(..MAX_PARTIAL);
        }
    }

    /// The start of a line that has not been emitted yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Emit what is left at end of stream.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.buf.is_empty() {
            emit(&self.buf);
            self.buf.clear();
        }
    }
}

/// Which records to read and how.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub stdout: bool,
    pub stderr: bool,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only the last N matching records (of what exists when reading starts).
    pub tail: Option<usize>,
    /// Used by [`LogEntry::render`] callers; kept here so berthd passes one struct.
    pub timestamps: bool,
    /// Keep reading as the file grows (and across rotations).
    pub follow: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// `"stdout"` or `"stderr"`.
    pub stream: String,
    pub time: DateTime<Utc>,
    pub log: Vec<u8>,
}

impl LogEntry {
    /// Docker stream type for [`crate::frame`].
    pub fn stream_type(&self) -> u8 {
        if self.stream == "stderr" {
            crate::protocol::STDERR
        } else {
            crate::protocol::STDOUT
        }
    }

    /// Append the record as the logs endpoint sends it: [`LogEntry::render`], inside a
    /// stream frame ([`crate::frame`]) when `framed` (a container without TTY). Appending to
    /// one buffer lets the caller send many records at once.
    pub fn write_to(&self, out: &mut Vec<u8>, timestamps: bool, framed: bool) {
        let ts = timestamps.then(|| self.time.to_rfc3339_opts(SecondsFormat::Nanos, true));
        if framed {
            let len = self.log.len() + ts.as_ref().map_or(0, |t| t.len() + 1);
            out.extend_from_slice(&[self.stream_type(), 0, 0, 0]);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
        if let Some(t) = ts {
            out.extend_from_slice(t.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&self.log);
    }

    /// Payload as `docker logs` prints it, optionally prefixed by the timestamp.
    pub fn render(&self, timestamps: bool) -> Vec<u8> {
        if !timestamps {
            return self.log.clone();
        }
        let mut out = self.time.to_rfc3339_opts(SecondsFormat::Nanos, true).into_bytes();
        out.push(b' ');
        out.extend_from_slice(&self.log);
        out
    }
}

struct Source {
    path: PathBuf,
    reader: BufReader<File>,
    ino: u64,
}

impl Source {
    fn open(path: &Path) -> io::Result<Source> {
        let f = File::open(path)?;
        let ino = f.metadata()?.ino();
        Ok(Source { path: path.to_owned(), reader: BufReader::with_capacity(READ_BUF, f), ino })
    }
}

/// Blocking iterator over log records, oldest first; see [`read_logs`].
pub struct LogReader {
    opts: LogOptions,
    live_path: PathBuf,
    pending: VecDeque<LogEntry>,
    /// Files still to read; the last one is the live file.
    sources: VecDeque<Source>,
    partial: Vec<u8>,
    /// Complete lines read in one go at a rotation or at the end.
    drained: VecDeque<Vec<u8>>,
    /// At the end of the live file: has the writer finished for good?
    stop: Option<Box<dyn Fn() -> bool + Send>>,
    /// Checked while waiting for more data in follow mode.
    cancel: Option<Box<dyn Fn() -> bool + Send>>,
    poll: Duration,
}

/// Open the log at `log_path` (with its rotated siblings) for reading.
pub fn read_logs(log_path: &Path, opts: LogOptions) -> Result<LogReader, LogError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| LogError::Io { path, source }
    };
    // Open every file up front: a rotation while we read only renames them,
    // and an open handle keeps following the same data.
    let mut sources = VecDeque::new();
    let mut n = 1;
    while rotated(log_path, n).exists() {
        n += 1;
    }
    for k in (1..n).rev() {
        match Source::open(&rotated(log_path, k)) {
            Ok(s) => sources.push_back(s),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&rotated(log_path, k))(e)),
        }
    }
    match Source::open(log_path) {
        Ok(s) => sources.push_back(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if opts.follow {
                // Follow a log that does not exist yet: create it empty.
                let f = open_append(log_path).map_err(io_err(log_path))?;
                drop(f);
                sources.push_back(Source::open(log_path).map_err(io_err(log_path))?);
            }
        }
        Err(e) => return Err(io_err(log_path)(e)),
    }
    let mut reader = LogReader {
        opts,
        live_path: log_path.to_owned(),
        pending: VecDeque::new(),
        sources,
        partial: Vec::new(),
        drained: VecDeque::new(),
        stop: None,
        cancel: None,
        poll: Duration::from_millis(50),
    };
    if let Some(n) = reader.opts.tail {
        // Read everything that exists now, keep the last n; following then
        // continues from the end of the live file.
        let follow = std::mem::replace(&mut reader.opts.follow, false);
        let mut ring = VecDeque::with_capacity(n.min(4096));
        while let Some(e) = reader.next_record(false) {
            let e = e?;
            if n == 0 {
                continue;
            }
            if ring.len() == n {
                ring.pop_front();
            }
            ring.push_back(e);
        }
        reader.pending = ring;
        reader.opts.follow = follow;
    }
    Ok(reader)
}

impl LogReader {
    /// In follow mode, stop once `path` exists (e.g. the container's
    /// `exit.json`) and everything written so far has been returned.
    pub fn stop_when_exists(self, path: PathBuf) -> Self {
        self.stop_when(move || path.exists())
    }

    /// In follow mode, stop once `finished` returns true at the end of the data and everything
    /// written so far has been returned: for a caller that learns of the writer's exit some
    /// other way (a file can be created and removed between two polls).
    pub fn stop_when(mut self, finished: impl Fn() -> bool + Send + 'static) -> Self {
        self.stop = Some(Box::new(finished));
        self
    }

    /// In follow mode, give up waiting for more data once `cancelled` returns
    /// true (e.g. the HTTP client went away).
    pub fn cancel_when(mut self, cancelled: impl Fn() -> bool + Send + 'static) -> Self {
        self.cancel = Some(Box::new(cancelled));
        self
    }

    /// True when no further record is at hand without reading the file again, i.e. the next
    /// [`Iterator::next`] may block (in follow mode) or ends: a caller that batches records
    /// sends its batch now.
    pub fn is_drained(&self) -> bool {
        self.pending.is_empty()
            && self.drained.is_empty()
            && self.sources.len() <= 1
            && self.sources.front().is_none_or(|s| memchr::memchr(b'\n', s.reader.buffer()).is_none())
    }

    fn wanted(&self, e: &LogEntry) -> bool {
        let stream_ok = match e.stream.as_str() {
            "stderr" => self.opts.stderr,
            _ => self.opts.stdout,
        };
        stream_ok && self.opts.since.is_none_or(|s| e.time >= s) && self.opts.until.is_none_or(|u| e.time <= u)
    }

    fn parse(&self, path: &Path, line: &[u8]) -> Result<LogEntry, LogError> {
        let rec: Record = serde_json::from_slice(line).map_err(|source| LogError::Corrupt { path: path.to_owned(), source })?;
        let time = DateTime::parse_from_rfc3339(&rec.time)
            .map_err(|e| LogError::Corrupt { path: path.to_owned(), source: serde::de::Error::custom(e) })?
            .with_timezone(&Utc);
        Ok(LogEntry { stream: rec.stream.into_owned(), time, log: rec.log.into_owned().into_bytes() })
    }

    /// Next raw line from the sources, following the live file if asked.
    fn next_line(&mut self, follow: bool) -> Option<Result<(PathBuf, Vec<u8>), LogError>> {
        loop {
            if let Some(line) = self.drained.pop_front() {
                return Some(Ok((self.live_path.clone(), line)));
            }
            let n_sources = self.sources.len();
            let src = self.sources.front_mut()?;
            match src.reader.read_until(b'\n', &mut self.partial) {
                Err(source) => return Some(Err(LogError::Io { path: src.path.clone(), source })),
                Ok(_) if self.partial.last() == Some(&b'\n') => {
                    return Some(Ok((src.path.clone(), std::mem::take(&mut self.partial))));
                }
                Ok(_) => {
                    // End of file; `partial` may hold a record being written.
                    if n_sources > 1 {
                        // A rotated file never grows again: drop a torn record.
                        self.partial.clear();
                        self.sources.pop_front();
                        continue;
                    }
                    if !follow {
                        return None;
                    }
                    let ino = src.ino;
                    if fs::metadata(&self.live_path).map(|m| m.ino()).is_ok_and(|live| live != ino) {
                        // Rotated: the writer flushed it and renamed it, so it never grows
                        // again. Read it to its end as a rotated file, then the file written
                        // after it (not the live one: a follower one file behind would skip a
                        // whole file).
                        if let Some(next) = self.successor(ino) {
                            self.sources.push_back(next);
                            continue;
                        }
                    } else if self.stop.as_ref().is_some_and(|f| f()) {
                        // Whatever was appended before the exit.
                        let _ = src.reader.read_to_end(&mut self.partial);
                        let end = self.partial.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                        let done: Vec<u8> = self.partial.drain(..end).collect();
                        self.drained.extend(done.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec));
                        self.partial.clear();
                        if self.drained.is_empty() {
                            return None;
                        }
                        continue;
                    }
                    if self.cancel.as_ref().is_some_and(|c| c()) {
                        return None;
                    }
                    std::thread::sleep(self.poll);
                }
            }
        }
    }

    /// The file the writer started after the rotated file `ino`. That one is `<live>.k` now,
    /// so its successor is `<live>.k-1` (the live file for k = 1); it is opened, then `ino` is
    /// checked to be still `.k`, so a rotation in between cannot make us open a later file.
    /// When `ino` is gone (the follower fell behind the whole cap, or `max-file=1`): the
    /// oldest file left.
    fn successor(&self, ino: u64) -> Option<Source> {
        let name = |k: u32| if k == 0 { self.live_path.clone() } else { rotated(&self.live_path, k) };
        let ino_at = |k: u32| fs::metadata(name(k)).map(|m| m.ino()).ok();
        for _ in 0..16 {
            let mut k = 1;
            let found = loop {
                match ino_at(k) {
                    Some(i) if i == ino => break true,
                    Some(_) => k += 1,
                    None => break false,
                }
            };
            let Ok(next) = Source::open(&name(k - 1)) else { continue };
            if !found || ino_at(k) == Some(ino) {
                return Some(next);
            }
        }
        None
    }

    fn next_record(&mut self, follow: bool) -> Option<Result<LogEntry, LogError>> {
        loop {
            let (path, line) = match self.next_line(follow)? {
                Ok(l) => l,
                Err(e) => return Some(Err(e)),
            };
            match self.parse(&path, &line) {
                Ok(e) if self.wanted(&e) => return Some(Ok(e)),
                Ok(_) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Async form of [`read_logs`] for berthd: records arrive on a channel fed by
/// a blocking task, which stops when the receiver is dropped. `stop_file` is
/// passed to [`LogReader::stop_when_exists`] (usually the container's `exit.json`).
/// Must be called inside a tokio runtime.
pub fn stream_logs(
    log_path: &Path,
    opts: LogOptions,
    stop_file: Option<PathBuf>,
) -> Result<tokio::sync::mpsc::Receiver<Result<LogEntry, LogError>>, LogError> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let mut reader = read_logs(log_path, opts)?;
    if let Some(p) = stop_file {
        reader = reader.stop_when_exists(p);
    }
    let closed = tx.clone();
    let reader = reader.cancel_when(move || closed.is_closed());
    tokio::task::spawn_blocking(move || {
        for entry in reader {
            if tx.blocking_send(entry).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

impl Iterator for LogReader {
    type Item = Result<LogEntry, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.pop_front() {
            return Some(Ok(e));
        }
        let follow = self.opts.follow;
        self.next_record(follow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn opts() -> LogOptions {
        LogOptions { stdout: true, stderr: true, ..Default::default() }
    }

    fn texts(r: LogReader) -> Vec<String> {
        r.map(|e| String::from_utf8(e.unwrap().log).unwrap()).collect()
    }

    #[test]
    fn splitter_lines_and_partial_chunks() {
        let mut s = LineSplitter::default();
        let mut out: Vec<Vec<u8>> = Vec::new();
        s.push(b"a\nb", |p| out.push(p.to_vec()));
        s.push(b"c\nd", |p| out.push(p.to_vec()));
        assert_eq!(out, vec![b"a\n".to_vec(), b"bc\n".to_vec()]);
        s.push(&vec![b'x'; MAX_PARTIAL * 2 + 5], |p| out.push(p.to_vec()));
        assert_eq!(out.len(), 4);
        assert_eq!(out[2].len(), MAX_PARTIAL);
        assert_eq!(out[2][0], b'd');
        s.finish(|p| out.push(p.to_vec()));
        assert_eq!(out[4].len(), 6);
        assert_eq!(out.iter().map(Vec::len).sum::<usize>(), 2 + 3 + 1 + MAX_PARTIAL * 2 + 5);
    }

    #[test]
    fn rotation_caps_files_and_reader_reads_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, 1000, 3).unwrap();
        for i in 0..200 {
            let stream = if i % 2 == 0 { "stdout" } else { "stderr" };
            w.write_entry(stream, format!("line {i}\n").as_bytes(), Utc::now()).unwrap();
        }
        w.flush().unwrap();
        let mut names: Vec<String> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["c.log", "c.log.1", "c.log.2"]);
        for n in &names {
            assert!(fs::metadata(dir.path().join(n)).unwrap().len() <= 1000);
        }
        let all = texts(read_logs(&path, opts()).unwrap());
        assert!(all.len() > 10 && all.len() < 200, "{}", all.len());
        let nums: Vec<usize> = all.iter().map(|l| l.trim()[5..].parse().unwrap()).collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "in order across files");
        assert_eq!(*nums.last().unwrap(), 199);

        let tail = texts(read_logs(&path, LogOptions { tail: Some(3), ..opts() }).unwrap());
        assert_eq!(tail, ["line 197\n", "line 198\n", "line 199\n"]);
        let errs = read_logs(&path, LogOptions { stdout: false, tail: Some(2), ..opts() }).unwrap();
        let errs: Vec<LogEntry> = errs.map(Result::unwrap).collect();
        assert_eq!(errs.iter().map(|e| e.stream.as_str()).collect::<Vec<_>>(), ["stderr", "stderr"]);
        assert_eq!(errs[1].log, b"line 199\n");
        assert!(texts(read_logs(&path, LogOptions { tail: Some(0), ..opts() }).unwrap()).is_empty());
    }

    #[test]
    fn since_until_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, 1 << 20, 2).unwrap();
        let t0 = DateTime::parse_from_rfc3339("2024-01-01T00:00:00.5Z").unwrap().with_timezone(&Utc);
        for i in 0..5 {
            w.write_entry("stdout", format!("{i}\n").as_bytes(), t0 + chrono::Duration::seconds(i)).unwrap();
        }
        w.flush().unwrap();
        let r = read_logs(&path, LogOptions { since: Some(t0 + chrono::Duration::seconds(1)), until: Some(t0 + chrono::Duration::seconds(3)), ..opts() }).unwrap();
        assert_eq!(texts(r), ["1\n", "2\n", "3\n"]);
        let first = read_logs(&path, opts()).unwrap().next().unwrap().unwrap();
        assert_eq!(first.render(true), b"2024-01-01T00:00:00.500000000Z 0\n");
        assert_eq!(first.render(false), b"0\n");
    }

    #[test]
    fn follower_behind_by_several_rotations_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let stop = Arc::new(AtomicBool::new(false));
        // Records of ~80 bytes, files of 1000: about 12 per file, 5 files kept.
        let mut w = LogWriter::open(&path, 1000, 5).unwrap();
        w.write_entry("stdout", b"n0\n", Utc::now()).unwrap();
        w.flush().unwrap();
        let stop2 = stop.clone();
        let mut r = read_logs(&path, LogOptions { follow: true, ..opts() }).unwrap().stop_when(move || stop2.load(Ordering::SeqCst));
        assert_eq!(r.next().unwrap().unwrap().log, b"n0\n");
        // Three rotations while the follower reads nothing: it is three files behind.
        for i in 1..40 {
            w.write_entry("stdout", format!("n{i}\n").as_bytes(), Utc::now()).unwrap();
        }
        w.flush().unwrap();
        assert!(rotated(&path, 3).exists());
        stop.store(true, Ordering::SeqCst);
        let got: Vec<String> = r.map(|e| String::from_utf8(e.unwrap().log).unwrap()).collect();
        let want: Vec<String> = (1..40).map(|i| format!("n{i}\n")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn records_are_docker_json_file_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, 1 << 20, 2).unwrap();
        let t = DateTime::parse_from_rfc3339("2024-01-01T00:00:00.5Z").unwrap().with_timezone(&Utc);
        w.write_entry("stdout", b"a \"q\"\t\n", t).unwrap();
        w.write_entry("stderr", b"bad \xff utf-8", t + chrono::Duration::nanoseconds(1)).unwrap();
        w.flush().unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"log\":\"a \\\"q\\\"\\t\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-01T00:00:00.500000000Z\"}\n\
             {\"log\":\"bad \u{fffd} utf-8\",\"stream\":\"stderr\",\"time\":\"2024-01-01T00:00:00.500000001Z\"}\n"
        );
    }

    #[test]
    fn batched_rendering_matches_one_frame_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, 1 << 20, 2).unwrap();
        for i in 0..3 {
            w.write_entry(if i == 1 { "stderr" } else { "stdout" }, format!("l{i}\n").as_bytes(), Utc::now()).unwrap();
        }
        w.flush().unwrap();
        for (ts, framed) in [(false, true), (true, true), (false, false), (true, false)] {
            let mut r = read_logs(&path, opts()).unwrap();
            let (mut batch, mut one_by_one) = (Vec::new(), Vec::new());
            let mut drained_at = Vec::new();
            while let Some(e) = r.next() {
                let e = e.unwrap();
                e.write_to(&mut batch, ts, framed);
                let data = e.render(ts);
                one_by_one.extend_from_slice(&if framed { crate::frame(e.stream_type(), &data) } else { data });
                drained_at.push(r.is_drained());
            }
            assert_eq!(batch, one_by_one, "timestamps {ts}, framed {framed}");
            assert_eq!(drained_at, [false, false, true], "only the last record leaves nothing at hand");
        }
    }

    #[tokio::test]
    async fn async_stream_follows_and_stops_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, 1 << 20, 2).unwrap();
        w.write_entry("stderr", b"one\n", Utc::now()).unwrap();
        w.flush().unwrap();
        let mut rx = stream_logs(&path, LogOptions { follow: true, ..opts() }, None).unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap().log, b"one\n");
        w.write_entry("stdout", b"two\n", Utc::now()).unwrap();
        w.flush().unwrap();
        let e = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap().unwrap();
        assert_eq!((e.stream.as_str(), e.log.as_slice()), ("stdout", &b"two\n"[..]));
        drop(rx);
        // The blocking reader notices the closed channel and ends; the runtime
        // shutting down at the end of the test would hang otherwise.
    }

    #[test]
    fn follow_across_rotation_until_stop_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let stop = dir.path().join("exit.json");
        let mut w = LogWriter::open(&path, 300, 2).unwrap();
        w.write_entry("stdout", b"first\n", Utc::now()).unwrap();
        w.flush().unwrap();
        let r = read_logs(&path, LogOptions { follow: true, ..opts() }).unwrap().stop_when_exists(stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            for e in r {
                tx.send(String::from_utf8(e.unwrap().log).unwrap()).unwrap();
            }
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "first\n");
        for i in 0..20 {
            w.write_entry("stdout", format!("n{i}\n").as_bytes(), Utc::now()).unwrap();
            w.flush().unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        fs::write(&stop, "{}").unwrap();
        t.join().unwrap();
        let got: Vec<String> = rx.try_iter().collect();
        let want: Vec<String> = (0..20).map(|i| format!("n{i}\n")).collect();
        assert_eq!(got, want, "every record once, across several rotations");
        assert!(rotated(&path, 1).exists());
    }
}
