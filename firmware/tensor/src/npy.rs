//! NumPy `.npy` codec, restricted to what Lockstep computes on: little-endian
//! float32 arrays in C order.
//!
//! Decoding accepts format versions 1.0, 2.0 and 3.0 and parses the header's
//! Python dict literal with a real (tiny) parser, so any header NumPy or a
//! careful third-party writer produces is read, and anything else is refused
//! with a one-line reason. Encoding writes exactly the bytes `numpy.save`
//! writes (version 1.0, NumPy >= 1.14 header layout), which is what
//! [`Tensor::sha256`] hashes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use lockstep_limits::MAX_NPY_HEADER_BYTES;
use thiserror::Error;

use crate::tensor::element_count;
use crate::{Tensor, TensorError};

const MAGIC: &[u8] = b"\x93NUMPY";
/// NumPy aligns the data to this many bytes so it can be memory-mapped.
const ALIGN: usize = 64;
/// NumPy pads the header so the first axis can grow to this many digits in
/// place; we copy it because our encoding must match `numpy.save` byte for byte.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
/// Header nesting is only ever one tuple deep; the bound keeps hostile input
/// from recursing the parser off the stack.
const MAX_NESTING: usize = 8;
/// Data is converted through a buffer of this size, so writing or hashing a
/// large tensor never needs a second copy of it in memory.
const CHUNK_BYTES: usize = 64 * 1024;

/// Why bytes are not a `.npy` file Lockstep can use.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NpyError {
    #[error("not a .npy file (no \\x93NUMPY magic); save the array with numpy.save")]
    BadMagic,
    #[error(
        "unsupported .npy format version {major}.{minor}; Lockstep reads 1.0, 2.0 and 3.0 \
         (save with numpy.save)"
    )]
    UnsupportedVersion { major: u8, minor: u8 },
    #[error(".npy header is {len} bytes; Lockstep reads headers up to {MAX_NPY_HEADER_BYTES}")]
    HeaderTooLong { len: usize },
    #[error("malformed .npy header: {0}")]
    BadHeader(String),
    #[error("dtype is '{found}' {hint}")]
    WrongDtype { found: String, hint: String },
    #[error("array is in Fortran order; save it with np.ascontiguousarray(arr) first")]
    FortranOrder,
    #[error(
        "array has {rank} dimensions; Lockstep allows at most {}: reshape it",
        lockstep_limits::MAX_RANK
    )]
    TooManyDims { rank: usize },
    #[error(
        "shape {shape} exceeds Lockstep's limits ({} per dimension, {} elements in all); split it",
        lockstep_limits::MAX_DIM,
        lockstep_limits::MAX_TENSOR_ELEMENTS
    )]
    TooLarge { shape: String },
    #[error("file is cut short: it has {found} bytes but needs {expected}; copy or save it again")]
    Truncated { expected: u64, found: u64 },
    #[error(
        "{extra} unexpected bytes after the array data; a .npy file holds exactly one array \
         (.npz archives are not supported)"
    )]
    TrailingData { extra: u64 },
}

impl From<TensorError> for NpyError {
    fn from(e: TensorError) -> Self {
        match e {
            TensorError::TooManyDims { rank } => NpyError::TooManyDims { rank },
            TensorError::TooLarge { shape } => NpyError::TooLarge { shape },
            // Only reachable through a bug in this module: lengths are checked first.
            other @ TensorError::LengthMismatch { .. } => NpyError::BadHeader(other.to_string()),
        }
    }
}

/// What went wrong with a `.npy` file on disk.
#[derive(Debug, Error)]
pub enum NpyFileCause {
    #[error("cannot read: {0}")]
    Read(io::Error),
    #[error("cannot write: {0}")]
    Write(io::Error),
    #[error(transparent)]
    Format(#[from] NpyError),
}

/// A file error that names its file, so one `Display` line tells the
/// operator everything, e.g. `a.npy: dtype is '<f8' (float64); ...`.
///
/// The cause is deliberately not exposed as `source()`: it is already in the
/// message, and error reporters that print chains would repeat it.
#[derive(Debug, Error)]
#[error("{}: {cause}", path.display())]
pub struct NpyFileError {
    pub path: PathBuf,
    pub cause: NpyFileCause,
}

/// Where a file's data starts and what it holds, known from the header alone.
struct Layout {
    shape: Vec<usize>,
    count: usize,
    data_start: usize,
}

impl Layout {
    /// Checks the total length against the header before anything the size
    /// of the data is allocated.
    fn check_total_len(&self, found: u64) -> Result<(), NpyError> {
        let expected = self.data_start as u64 + self.count as u64 * 4;
        match found {
            f if f < expected => Err(NpyError::Truncated { expected, found }),
            f if f > expected => Err(NpyError::TrailingData {
                extra: f - expected,
            }),
            _ => Ok(()),
        }
    }
}

pub fn decode(bytes: &[u8]) -> Result<Tensor, NpyError> {
    let layout = parse_prefix(bytes)?;
    layout.check_total_len(bytes.len() as u64)?;
    let raw = bytes.get(layout.data_start..).unwrap_or_default();
    let data = raw.chunks_exact(4).map(f32_le).collect();
    Ok(Tensor::new(layout.shape, data)?)
}

pub fn encode(t: &Tensor) -> Vec<u8> {
    let mut out = Vec::with_capacity(ALIGN * 4 + t.len() * 4);
    emit(t, |bytes| {
        out.extend_from_slice(bytes);
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_or_else(|never| match never {});
    out
}

pub fn read_file(path: &Path) -> Result<Tensor, NpyFileError> {
    read_inner(path).map_err(|cause| NpyFileError {
        path: path.to_path_buf(),
        cause,
    })
}

/// Writes atomically: readers see the old file or the complete new one, never
/// a partial write, even if this process dies midway.
pub fn write_file(path: &Path, t: &Tensor) -> Result<(), NpyFileError> {
    write_inner(path, t).map_err(|e| NpyFileError {
        path: path.to_path_buf(),
        cause: NpyFileCause::Write(e),
    })
}

fn f32_le(c: &[u8]) -> f32 {
    // from_le_bytes is a bit cast, so NaN payloads survive.
    f32::from_le_bytes([c[0], c[1], c[2], c[3]])
}

/// Feeds the canonical encoding of `t` to `sink` in bounded pieces.
/// The canonical `.npy` bytes of `t` ([`encode`]'s), handed to `sink` in
/// pieces of at most a few MiB: for writing a tensor out without building a
/// second copy of it in memory.
pub fn emit<E>(t: &Tensor, mut sink: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
    sink(&header(t.shape()))?;
    let mut buf = Vec::with_capacity(CHUNK_BYTES);
    for chunk in t.data().chunks(CHUNK_BYTES / 4) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
        sink(&buf)?;
    }
    Ok(())
}

/// The canonical `.npy` header of a float32 tensor of `shape`: the bytes
/// [`encode`] writes before the data. Its length is a multiple of 64, so a
/// hash of the whole encoding can start from a state over the header alone
/// (the device-side trace hashing does).
pub fn header_bytes(shape: &[usize]) -> Vec<u8> {
    header(shape)
}

fn header(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_repr = match dims.as_slice() {
        [one] => format!("({one},)"),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_repr}, }}");
    if let Some(first) = dims.first() {
        dict.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(first.len())));
    }
    // As in NumPy, an already aligned header still gets a full block of padding.
    let pad = ALIGN - (MAGIC.len() + 4 + dict.len() + 1) % ALIGN;
    // A valid tensor's header is a few hundred bytes at most, so u16 holds it.
    let header_len = (dict.len() + pad + 1) as u16;
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + usize::from(header_len));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + pad, b' ');
    out.push(b'\n');
    out
}

/// Returns the header text's offset and length, and the major version.
fn preamble(bytes: &[u8]) -> Result<(usize, usize, u8), NpyError> {
    if !bytes.starts_with(MAGIC) {
        return Err(NpyError::BadMagic);
    }
    let truncated = |expected: usize| NpyError::Truncated {
        expected: expected as u64,
        found: bytes.len() as u64,
    };
    let (major, minor) = match bytes.get(6..8) {
        Some(&[major, minor]) => (major, minor),
        _ => return Err(truncated(8)),
    };
    let (start, len) = match (major, minor) {
        (1, 0) => match bytes.get(8..10) {
            Some(&[a, b]) => (10, usize::from(u16::from_le_bytes([a, b]))),
            _ => return Err(truncated(10)),
        },
        (2 | 3, 0) => match bytes.get(8..12) {
            Some(&[a, b, c, d]) => (12, u32::from_le_bytes([a, b, c, d]) as usize),
            _ => return Err(truncated(12)),
        },
        _ => return Err(NpyError::UnsupportedVersion { major, minor }),
    };
    if len > MAX_NPY_HEADER_BYTES {
        return Err(NpyError::HeaderTooLong { len });
    }
    Ok((start, len, major))
}

/// How many bytes [`encode`] gives for `t`, without encoding it.
pub fn encoded_len(t: &Tensor) -> u64 {
    header(t.shape()).len() as u64 + t.len() as u64 * 4
}

/// The shape and the offset of the data of the `.npy` bytes that begin
/// with `prefix` (which must hold at least the whole header): for streaming
/// a stored tensor's data without reading it all into memory.
pub fn decode_prefix(prefix: &[u8]) -> Result<(Vec<usize>, usize), NpyError> {
    let layout = parse_prefix(prefix)?;
    Ok((layout.shape, layout.data_start))
}

/// Parses everything before the data; `bytes` must hold at least the header.
fn parse_prefix(bytes: &[u8]) -> Result<Layout, NpyError> {
    let (start, len, major) = preamble(bytes)?;
    let end = start + len;
    let raw = bytes.get(start..end).ok_or(NpyError::Truncated {
        expected: end as u64,
        found: bytes.len() as u64,
    })?;
    // Versions 1 and 2 are specified as latin-1, but every real writer emits
    // ASCII, so anything else there is corruption rather than intent.
    let text = std::str::from_utf8(raw)
        .ok()
        .filter(|t| major >= 3 || t.is_ascii())
        .ok_or_else(|| {
            let want = if major >= 3 { "UTF-8" } else { "ASCII" };
            NpyError::BadHeader(format!("header is not {want} text"))
        })?;
    let shape = interpret(Parser { src: text, pos: 0 }.header()?)?;
    let count = element_count(&shape)?;
    Ok(Layout {
        shape,
        count,
        data_start: end,
    })
}

#[derive(Debug)]
enum Value {
    Str(String),
    Bool(bool),
    Int(u64),
    Tuple(Vec<Value>),
    /// Only structured dtypes use lists, and those are refused whatever they hold.
    List,
}

/// Recursive-descent parser for the subset of Python literals `.npy`
/// headers use: a dict of string keys to strings, booleans, non-negative
/// integers, tuples and lists.
struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&mut self) -> Option<char> {
        let rest = &self.src[self.pos..];
        self.pos += rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_whitespace())
                .len();
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self, c: char) {
        self.pos += c.len_utf8();
    }

    fn unexpected(&self, found: Option<char>, wanted: &str) -> NpyError {
        NpyError::BadHeader(match found {
            Some(c) => format!("expected {wanted} at byte {}, found {c:?}", self.pos),
            None => format!("expected {wanted}, but the header ended"),
        })
    }

    fn header(mut self) -> Result<Vec<(String, Value)>, NpyError> {
        match self.peek() {
            Some('{') => self.bump('{'),
            other => return Err(self.unexpected(other, "'{'")),
        }
        let mut entries = Vec::new();
        loop {
            match self.peek() {
                Some('}') => break,
                Some(q @ ('\'' | '"')) => {
                    let key = self.string(q)?;
                    match self.peek() {
                        Some(':') => self.bump(':'),
                        other => return Err(self.unexpected(other, "':'")),
                    }
                    entries.push((key, self.value(0)?));
                }
                other => return Err(self.unexpected(other, "a quoted key or '}'")),
            }
            match self.peek() {
                Some(',') => self.bump(','),
                Some('}') => {}
                other => return Err(self.unexpected(other, "',' or '}'")),
            }
        }
        self.bump('}');
        // NumPy pads with spaces and a newline; anything else is not a header.
        match self.peek() {
            None => Ok(entries),
            other => Err(self.unexpected(other, "only padding after the dict")),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, NpyError> {
        if depth > MAX_NESTING {
            return Err(NpyError::BadHeader("values nested too deeply".into()));
        }
        match self.peek() {
            Some(q @ ('\'' | '"')) => self.string(q).map(Value::Str),
            Some('[') => self.sequence(']', depth).map(|_| Value::List),
            Some('(') => {
                let (items, trailing_comma) = self.sequence(')', depth)?;
                // As in Python, `(5)` is just 5 in parentheses, not a tuple.
                Ok(match <[Value; 1]>::try_from(items) {
                    Ok([only]) if !trailing_comma => only,
                    Ok(one) => Value::Tuple(one.into()),
                    Err(items) => Value::Tuple(items),
                })
            }
            Some(c) if c.is_ascii_digit() => Ok(self.int()),
            Some(c) if c.is_ascii_alphabetic() => {
                let word = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
                match word {
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    _ => Err(NpyError::BadHeader(format!("unexpected name '{word}'"))),
                }
            }
            other => Err(self.unexpected(other, "a value")),
        }
    }

    /// Parses items up to `close`; the opening bracket is next in the input.
    /// Also reports whether the last item had a trailing comma.
    fn sequence(&mut self, close: char, depth: usize) -> Result<(Vec<Value>, bool), NpyError> {
        self.pos += 1;
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            if self.peek() == Some(close) {
                self.bump(close);
                return Ok((items, trailing_comma));
            }
            items.push(self.value(depth + 1)?);
            trailing_comma = false;
            match self.peek() {
                Some(',') => {
                    self.bump(',');
                    trailing_comma = true;
                }
                Some(c) if c == close => {}
                other => return Err(self.unexpected(other, &format!("',' or '{close}'"))),
            }
        }
    }

    fn int(&mut self) -> Value {
        let digits = self.take_while(|c| c.is_ascii_digit());
        // Saturating is enough: anything that large fails the MAX_DIM check.
        let n = digits.bytes().fold(0u64, |n, d| {
            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        });
        // Python 2 era NumPy wrote long integers as `3L`.
        if self.src[self.pos..].starts_with('L') {
            self.pos += 1;
        }
        Value::Int(n)
    }

    fn string(&mut self, quote: char) -> Result<String, NpyError> {
        self.bump(quote);
        let body = self.take_while(|c| c != quote && c != '\\' && c != '\n');
        match self.src[self.pos..].chars().next() {
            Some(c) if c == quote => {
                self.bump(c);
                Ok(body.to_owned())
            }
            Some('\\') => Err(NpyError::BadHeader(
                "escapes in strings are not supported".into(),
            )),
            _ => Err(NpyError::BadHeader("unterminated string".into())),
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        let rest = &self.src[start..];
        self.pos += rest.find(|c| !keep(c)).unwrap_or(rest.len());
        &self.src[start..self.pos]
    }
}

/// Checks the header dict and returns the shape.
fn interpret(entries: Vec<(String, Value)>) -> Result<Vec<usize>, NpyError> {
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    for (key, value) in entries {
        let slot = match key.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran,
            "shape" => &mut shape,
            _ => {
                return Err(NpyError::BadHeader(format!(
                    "unexpected key '{key}'; only 'descr', 'fortran_order' and 'shape' are allowed"
                )))
            }
        };
        if slot.replace(value).is_some() {
            return Err(NpyError::BadHeader(format!("duplicate key '{key}'")));
        }
    }
    let missing = |key: &str| NpyError::BadHeader(format!("missing key '{key}'"));
    match descr.ok_or_else(|| missing("descr"))? {
        Value::Str(d) => check_descr(&d)?,
        _ => {
            return Err(NpyError::BadHeader(
                "'descr' is a structured dtype; Lockstep needs a plain float32 array".into(),
            ))
        }
    }
    match fortran.ok_or_else(|| missing("fortran_order"))? {
        Value::Bool(false) => {}
        Value::Bool(true) => return Err(NpyError::FortranOrder),
        _ => {
            return Err(NpyError::BadHeader(
                "'fortran_order' must be True or False".into(),
            ))
        }
    }
    let not_dims =
        || NpyError::BadHeader("'shape' must be a tuple of non-negative integers".into());
    match shape.ok_or_else(|| missing("shape"))? {
        Value::Tuple(dims) => dims
            .into_iter()
            .map(|d| match d {
                // Saturating keeps a dimension too big for usize a limit error.
                Value::Int(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
                _ => Err(not_dims()),
            })
            .collect(),
        _ => Err(not_dims()),
    }
}

fn check_descr(descr: &str) -> Result<(), NpyError> {
    if descr == "<f4" {
        return Ok(());
    }
    let (order, rest) = match descr.as_bytes().first() {
        Some(b'<' | b'>' | b'|' | b'=') => descr.split_at(1),
        _ => ("", descr),
    };
    let kind_len = rest.chars().next().map_or(0, char::len_utf8);
    let (kind, size) = rest.split_at(kind_len);
    let bits = size.parse::<u64>().ok().map(|n| n.saturating_mul(8));
    let name = match (kind, bits) {
        ("f", Some(b)) => format!("float{b}"),
        ("i", Some(b)) => format!("int{b}"),
        ("u", Some(b)) => format!("uint{b}"),
        ("c", Some(b)) => format!("complex{b}"),
        ("b", Some(8)) => "bool".into(),
        ("U" | "S", _) => "string".into(),
        ("O", _) => "Python object".into(),
        ("M" | "m", _) => "datetime".into(),
        _ => "unrecognised".into(),
    };
    let hint = if name == "float32" && order == ">" {
        "(big-endian float32); Lockstep tensors are little-endian: convert with arr.astype('<f4')"
            .to_owned()
    } else {
        format!("({name}); Lockstep tensors are float32: convert with arr.astype('<f4')")
    };
    Err(NpyError::WrongDtype {
        found: descr.to_owned(),
        hint,
    })
}

fn read_inner(path: &Path) -> Result<Tensor, NpyFileCause> {
    let mut file = File::open(path).map_err(NpyFileCause::Read)?;
    let file_len = file.metadata().map_err(NpyFileCause::Read)?.len();
    let mut prefix = Vec::new();
    let mut read_up_to = |prefix: &mut Vec<u8>, n: usize| {
        let more = n.saturating_sub(prefix.len()) as u64;
        (&mut file)
            .take(more)
            .read_to_end(prefix)
            .map_err(NpyFileCause::Read)
    };
    read_up_to(&mut prefix, 12)?;
    let (start, len, _) = preamble(&prefix)?;
    read_up_to(&mut prefix, start + len)?;
    let layout = parse_prefix(&prefix)?;
    layout.check_total_len(file_len)?;

    file.seek(SeekFrom::Start(layout.data_start as u64))
        .map_err(NpyFileCause::Read)?;
    let mut data = Vec::with_capacity(layout.count);
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut remaining = layout.count * 4;
    while remaining > 0 {
        let n = remaining.min(CHUNK_BYTES);
        file.read_exact(&mut buf[..n]).map_err(NpyFileCause::Read)?;
        data.extend(buf[..n].chunks_exact(4).map(f32_le));
        remaining -= n;
    }
    Ok(Tensor::new(layout.shape, data).map_err(NpyError::from)?)
}

fn write_inner(path: &Path, t: &Tensor) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path names no file"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Same directory, so the rename cannot cross filesystems; unique per
    // process and call, so concurrent writers never share a temp file.
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    let result = emit(t, |bytes| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        // Best effort: the write error is the one worth reporting.
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // The rename is only durable once the directory entry is on disk too.
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(version: u8, dict: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        let header = format!("{dict}\n");
        if version == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    /// Also checks the promise that every message is a single line.
    fn err(dict: &str, data: &[u8]) -> NpyError {
        let e = decode(&npy(1, dict, data)).unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
        e
    }

    fn bad_header(dict: &str) -> String {
        match err(dict, &[]) {
            NpyError::BadHeader(msg) => msg,
            other => panic!("{dict}: expected BadHeader, got {other:?}"),
        }
    }

    #[test]
    fn encoded_len_is_the_length_of_the_encoding() {
        for shape in [vec![0], vec![3], vec![2, 5], vec![1, 1, 7]] {
            let n = shape.iter().product();
            let t = Tensor::new(shape, vec![1.5; n]).unwrap();
            assert_eq!(encoded_len(&t), encode(&t).len() as u64);
        }
    }

    #[test]
    fn encodes_like_numpy() {
        let t = Tensor::new(vec![3, 4], (0..12).map(|i| i as f32).collect()).unwrap();
        let bytes = encode(&t);
        let head = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }";
        assert_eq!(&bytes[..10], b"\x93NUMPY\x01\x00\x76\x00");
        assert_eq!(&bytes[10..10 + head.len()], head.as_bytes());
        assert_eq!(bytes[127], b'\n');
        assert_eq!(bytes.len(), 128 + 48);
        assert_eq!(&bytes[128 + 4..128 + 8], &1.0f32.to_le_bytes());
        for shape in [vec![], vec![5], vec![0, 3], vec![1; 8], vec![1 << 30]] {
            let h = header(&shape);
            assert_eq!(h.len() % ALIGN, 0, "{shape:?}");
        }
        assert!(String::from_utf8_lossy(&header(&[])).contains("'shape': (), }"));
        assert!(String::from_utf8_lossy(&header(&[5])).contains("'shape': (5,), }"));
    }

    #[test]
    fn round_trips_bits() {
        let bits = [
            0x7fc0_0001,
            0xffff_ffff,
            0x8000_0000,
            0x0000_0001,
            0x7f80_0000,
        ];
        let data = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let t = Tensor::new(vec![5], data).unwrap();
        let back = decode(&encode(&t)).unwrap();
        assert!(t.bit_eq(&back));
        for shape in [vec![], vec![0, 3], vec![2, 0], vec![1, 2, 3]] {
            let t = Tensor::zeros(shape).unwrap();
            assert!(t.bit_eq(&decode(&encode(&t)).unwrap()));
        }
    }

    #[test]
    fn header_variants_are_accepted() {
        let four = [0u8; 16];
        for dict in [
            "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2, 2)}",
            "{'shape': (2, 2), 'fortran_order': False, 'descr': '<f4'}",
            "{ 'descr' :'<f4','fortran_order':False,'shape':( 2 ,2 , ), }   \n   ",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 2L), }",
        ] {
            let t = decode(&npy(1, dict, &four)).unwrap();
            assert_eq!(t.shape(), &[2, 2], "{dict}");
        }
        let d = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }";
        assert_eq!(decode(&npy(2, d, &four)).unwrap().shape(), &[4]);
        assert_eq!(decode(&npy(3, d, &four)).unwrap().shape(), &[4]);
        let scalar = "{'descr': '<f4', 'fortran_order': False, 'shape': ()}";
        assert_eq!(decode(&npy(1, scalar, &four[..4])).unwrap().rank(), 0);
        let empty = "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3)}";
        assert!(decode(&npy(1, empty, &[])).unwrap().is_empty());
    }

    #[test]
    fn preamble_errors() {
        assert!(matches!(decode(b"PK\x03\x04"), Err(NpyError::BadMagic)));
        assert!(matches!(
            decode(b"\x93NUMPY\x01"),
            Err(NpyError::Truncated { expected: 8, .. })
        ));
        assert!(matches!(
            decode(b"\x93NUMPY\x04\x00\x00\x00"),
            Err(NpyError::UnsupportedVersion { major: 4, minor: 0 })
        ));
        assert!(matches!(
            decode(b"\x93NUMPY\x02\x00\xff\xff\xff\x00"),
            Err(NpyError::HeaderTooLong { len: 0x00ff_ffff })
        ));
        assert!(matches!(
            decode(b"\x93NUMPY\x01\x00\x50\x00{'descr'"),
            Err(NpyError::Truncated {
                expected: 90,
                found: 18
            })
        ));
        let latin1 = npy(1, "{'descr': '<f4\u{e9}'}", &[]);
        assert!(matches!(decode(&latin1), Err(NpyError::BadHeader(m)) if m.contains("ASCII")));
    }

    #[test]
    fn malformed_headers_are_explained() {
        let f = "'descr': '<f4', 'fortran_order': False";
        assert!(bad_header(&format!("{{{f}, 'shape': (3)}}")).contains("tuple"));
        assert!(bad_header(&format!("{{{f}, 'shape': (-1,)}}")).contains("'-'"));
        assert!(bad_header(&format!("{{{f}, 'shape': (3,,)}}")).contains("a value"));
        assert!(bad_header(&format!("{{{f}, 'shape': (3,), 'x': 1}}")).contains("'x'"));
        assert!(bad_header(&format!("{{{f}, 'fortran_order': False}}")).contains("duplicate"));
        assert!(bad_header(&format!("{{{f}}}")).contains("missing key 'shape'"));
        assert!(bad_header(&format!("{{{f}, 'shape': (1,)}} x")).contains("padding"));
        assert!(bad_header(&format!("{{{f}, 'shape': (1,)")).contains("ended"));
        assert!(bad_header("{'descr': '<f4, }").contains("unterminated"));
        assert!(bad_header("{'descr': None}").contains("None"));
        assert!(bad_header("{'descr': [('a', '<f4')]}").contains("structured"));
        assert!(bad_header(&format!("{{{f}, 'shape': {}}}", "(".repeat(50))).contains("deep"));
        let fortran = "{'descr': '<f4', 'fortran_order': 1, 'shape': ()}";
        assert!(bad_header(fortran).contains("True or False"));
    }

    #[test]
    fn dtype_and_layout_errors() {
        let dict =
            |descr: &str| format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,)}}");
        let msg = err(&dict("<f8"), &[0; 8]).to_string();
        assert_eq!(
            msg,
            "dtype is '<f8' (float64); Lockstep tensors are float32: convert with arr.astype('<f4')"
        );
        for (descr, size, name) in [
            (">f4", 4, "(big-endian float32)"),
            ("<f2", 2, "(float16)"),
            ("<i4", 4, "(int32)"),
            ("|b1", 1, "(bool)"),
            ("float32", 4, "(unrecognised)"),
        ] {
            let msg = err(&dict(descr), &vec![0; size]).to_string();
            assert!(msg.contains(name), "{msg}");
        }

        let with = |fortran: &str, shape: &str| {
            format!("{{'descr': '<f4', 'fortran_order': {fortran}, 'shape': {shape}}}")
        };
        assert_eq!(
            err(&with("True", "(1, 2)"), &[0; 8]),
            NpyError::FortranOrder
        );
        let nine = format!("({})", ["1"; 9].join(", "));
        assert_eq!(
            err(&with("False", &nine), &[0; 4]),
            NpyError::TooManyDims { rank: 9 }
        );
        for shape in [
            "(1073741825,)",
            "(65536, 65536)",
            "(0, 99999999999999999999999)",
        ] {
            assert!(
                matches!(err(&with("False", shape), &[]), NpyError::TooLarge { .. }),
                "{shape}"
            );
        }
        let three = with("False", "(3,)");
        assert!(matches!(err(&three, &[0; 11]), NpyError::Truncated { .. }));
        assert_eq!(err(&three, &[0; 13]), NpyError::TrailingData { extra: 1 });
    }
}
