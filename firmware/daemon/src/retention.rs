//! Retained evidence: every op output (trace leaf) of each job, with the
//! job's inputs, program and signed receipt, kept on disk under
//! `STATE/retained/` so a submitter can spot-check the job or a referee can
//! settle a dispute about it later.
//!
//! One directory per job, named by the job id's hex:
//! - `leaves.bin`: each leaf's canonical `.npy` bytes, in execution order;
//! - `leaves.idx`: per leaf, offset (u64 LE), length (u64 LE) and the
//!   output SHA-256 (32 bytes): the trace's leaves, so audit paths are
//!   computed without reading tensor data;
//! - `inputs/NAME.npy` (the inputs given as data, and those fetched from
//!   another node), `program.bin` (canonical postcard), `receipt.json`
//!   and `receipt.json.minisig`;
//! - `references.bin`: the job's tensor references (postcard of
//!   `Vec<TensorReference>`, empty when it had none), served as the
//!   lineage of its referenced inputs (`FetchSource`).
//!
//! - `source`: who submitted the job (admission.rs `Source`), for quotas.
//!
//! A job is written under `NAME.tmp` and renamed into place once complete,
//! so a crash leaves either a whole job or a `.tmp` directory, which the
//! next start deletes. After each new job: the submitting source's oldest
//! jobs while it holds more than its quota (`RETAINED_JOBS_PER_SOURCE_MAX`
//! jobs, or its share of the byte budget), then jobs older than the
//! retention window, then the oldest jobs until the rest fit the byte
//! budget and `MAX_RETAINED_JOBS`, are evicted. So a flood from one source
//! only ever evicts that source's own evidence.
//!
//! Nothing is written without room: before a job's first byte the free
//! space above the floor (`DEFAULT_STATE_FREE_FLOOR_BYTES`) is measured,
//! and the job writes no more than that (the worker is the only writer of
//! job data), so evidence can never fill the disk that holds the device
//! key, trust files and bundles. A job that does not
//! fit is run and receipted all the same; only its evidence is not kept.
//! The worker writes (so evidence never slows the network tasks); network
//! tasks only read.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use lockstep_limits::{
    MAX_JOB_TENSORS, MAX_PROGRAM_BYTES, MAX_RECEIPT_BYTES, MAX_RETAINED_JOBS,
    MAX_SIGNATURE_FILE_BYTES, RETAINED_JOBS_PER_SOURCE_MAX, RETENTION_SOURCES_MIN,
};
use lockstep_protocol::{SourceEvidence, TensorReference};

use crate::admission::Source;
use lockstep_program::trace::Hash;
use lockstep_tensor::{npy, Tensor};

const LEAF_RECORD: usize = 8 + 8 + 32;

/// Most bytes `references.bin` may hold: every input a reference with a
/// receipt of the largest size and room for the rest.
const MAX_REFERENCES_BYTES: usize = MAX_JOB_TENSORS * (MAX_RECEIPT_BYTES + 16 * 1024);

/// Why evidence cannot be served or kept.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("job {0} is not retained here (never run on this node, or evicted after its retention window or for space)")]
    NotRetained(String),
    #[error("job {job}: the trace has {size} leaves; there is no leaf {index}")]
    NoLeaf { job: String, index: u64, size: u64 },
    #[error("job {job}: no input named '{name}'")]
    NoInput { job: String, name: String },
    #[error("job {job} has no referenced input named '{name}'")]
    NoReference { job: String, name: String },
    #[error("job {job} has no output with SHA-256 {sha256} in its retained trace")]
    NoOutput { job: String, sha256: String },
    #[error("retained evidence of job {job} is damaged: {problem}")]
    Damaged { job: String, problem: String },
    #[error("writing evidence: {0}")]
    Io(#[from] std::io::Error),
    #[error("no room for evidence: {needed} bytes needed, {room} free above the {floor}-byte floor kept for the node's own files")]
    NoRoom { needed: u64, room: u64, floor: u64 },
}

struct Entry {
    job: String,
    created: SystemTime,
    bytes: u64,
    /// None for a job whose `source` file is missing or unreadable: it
    /// counts against no source's quota and is evicted by age.
    source: Option<Source>,
}

/// The retained jobs of one node.
pub struct Retention {
    dir: PathBuf,
    window: Duration,
    budget: u64,
    /// Free bytes evidence never takes from its filesystem.
    free_floor: u64,
    /// Oldest first.
    jobs: Mutex<VecDeque<Entry>>,
}

/// Free bytes an unprivileged writer may still use on `dir`'s filesystem.
pub(crate) fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

fn encode_source(s: Source) -> Vec<u8> {
    match s {
        Source::V4(o) => [&[4u8][..], &o].concat(),
        Source::V6Prefix(o) => [&[6u8][..], &o].concat(),
    }
}

fn decode_source(b: &[u8]) -> Option<Source> {
    match b.split_first()? {
        (4, o) => Some(Source::V4(o.try_into().ok()?)),
        (6, o) => Some(Source::V6Prefix(o.try_into().ok()?)),
        _ => None,
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

impl Retention {
    /// Opens (creating) `STATE/retained`, deletes half-written jobs, and
    /// indexes the rest. A budget of 0 retains nothing.
    pub fn open(
        state: &Path,
        window: Duration,
        budget: u64,
        free_floor: u64,
    ) -> Result<Retention, RetentionError> {
        let dir = state.join("retained");
        fs::create_dir_all(&dir)?;
        let mut jobs = Vec::new();
        for e in fs::read_dir(&dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            // The data partition's own directory, when evidence has one.
            if name == "lost+found" {
                continue;
            }
            if name.ends_with(".tmp") || name.len() != 32 {
                let _ = fs::remove_dir_all(&path);
                continue;
            }
            let created = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let source = fs::read(path.join("source"))
                .ok()
                .and_then(|b| decode_source(&b));
            jobs.push(Entry {
                job: name,
                created,
                bytes: dir_bytes(&path),
                source,
            });
        }
        jobs.sort_by_key(|e| e.created);
        let r = Retention {
            dir,
            window,
            budget,
            free_floor,
            jobs: Mutex::new(jobs.into()),
        };
        r.evict();
        Ok(r)
    }

    fn job_dir(&self, job: &str) -> PathBuf {
        self.dir.join(job)
    }

    /// Jobs and bytes of evidence held now (the metrics' gauges).
    pub fn usage(&self) -> (u64, u64) {
        let jobs = self.jobs.lock().expect("retention index lock");
        (jobs.len() as u64, jobs.iter().map(|e| e.bytes).sum())
    }

    /// Whether evidence for `job_id` is held now. A new job must not reuse
    /// such an id: anyone who saw a receipt could otherwise replace the
    /// evidence behind it.
    pub fn holds(&self, job_id: &[u8; 16]) -> bool {
        let job = hex::encode(job_id);
        self.jobs
            .lock()
            .expect("retention index lock")
            .iter()
            .any(|e| e.job == job)
    }

    /// Starts retaining a job; `None` when retention is off.
    pub fn begin(
        &self,
        job_id: &[u8; 16],
        source: Source,
        program: &[u8],
        inputs: &std::collections::BTreeMap<String, Tensor>,
        references: &[TensorReference],
    ) -> Option<Pending> {
        if self.budget == 0 {
            return None;
        }
        let job = hex::encode(job_id);
        let tmp = self.dir.join(format!("{job}.tmp"));
        let start = || -> Result<Pending, RetentionError> {
            // Room first, before anything is written: what the filesystem
            // has above the floor, and no more than the whole budget.
            // A source's one job never takes more than that source's share
            // of the budget, so no single job can evict everyone else's.
            let room = free_bytes(&self.dir)?
                .saturating_sub(self.free_floor)
                .min(self.source_bytes_max());
            let references = postcard::to_stdvec(references).map_err(|e| {
                RetentionError::Io(std::io::Error::other(format!(
                    "encoding the job's references: {e}"
                )))
            })?;
            let first = program.len() as u64
                + references.len() as u64
                + inputs
                    .values()
                    .map(|t| t.len() as u64 * 4 + 128)
                    .sum::<u64>();
            if first > room {
                return Err(RetentionError::NoRoom {
                    needed: first,
                    room,
                    floor: self.free_floor,
                });
            }
            let _ = fs::remove_dir_all(&tmp);
            fs::create_dir_all(tmp.join("inputs"))?;
            fs::write(tmp.join("source"), encode_source(source))?;
            let mut bytes = program.len() as u64 + references.len() as u64;
            fs::write(tmp.join("program.bin"), program)?;
            fs::write(tmp.join("references.bin"), &references)?;
            for (name, t) in inputs {
                bytes += npy::encoded_len(t);
                let mut f = BufWriter::new(File::create(
                    tmp.join("inputs").join(format!("{name}.npy")),
                )?);
                npy::emit(t, |piece| f.write_all(piece))?;
                f.flush()?;
            }
            Ok(Pending {
                leaves: BufWriter::new(File::create(tmp.join("leaves.bin"))?),
                index: Vec::new(),
                offset: 0,
                bytes,
                budget: room,
                source,
                over_budget: false,
                failed: None,
                tmp: tmp.clone(),
                job: job.clone(),
            })
        };
        match start() {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(job = %job, error = %e, "not retaining evidence");
                let _ = fs::remove_dir_all(&tmp);
                None
            }
        }
    }

    /// Moves a complete job into place and evicts what no longer fits.
    pub fn commit(&self, mut pending: Pending, receipt: &[u8], signature: &str) {
        let job = pending.job.clone();
        let result = (|| -> Result<u64, RetentionError> {
            if let Some(e) = pending.failed.take() {
                return Err(e);
            }
            if pending.over_budget {
                return Err(RetentionError::Io(std::io::Error::other(format!(
                    "the job's evidence is over the {} bytes it had room for (retention budget {}, free-space floor {})",
                    pending.budget, self.budget, self.free_floor
                ))));
            }
            pending.leaves.flush()?;
            pending.leaves.get_ref().sync_data()?;
            fs::write(pending.tmp.join("leaves.idx"), &pending.index)?;
            fs::write(pending.tmp.join("receipt.json"), receipt)?;
            fs::write(pending.tmp.join("receipt.json.minisig"), signature)?;
            let fin = self.job_dir(&job);
            let mut jobs = self.jobs.lock().expect("retention index lock");
            if fin.exists() {
                // Two jobs with one id raced past the check at submission:
                // the evidence already committed stays, the newer is dropped.
                drop(jobs);
                fs::remove_dir_all(&pending.tmp)?;
                tracing::warn!(job = %job, "job id reused; its first evidence is kept");
                return Ok(0);
            }
            fs::rename(&pending.tmp, &fin)?;
            let bytes = pending.bytes + receipt.len() as u64 + signature.len() as u64;
            jobs.push_back(Entry {
                job: job.clone(),
                created: SystemTime::now(),
                bytes,
                source: Some(pending.source),
            });
            Ok(bytes)
        })();
        match result {
            Ok(bytes) => tracing::info!(job = %job, bytes, "evidence retained"),
            Err(e) => {
                tracing::warn!(job = %job, error = %e, "evidence not retained");
                let _ = fs::remove_dir_all(&pending.tmp);
            }
        }
        self.evict_for(pending.source);
    }

    /// Most bytes one source may keep retained.
    fn source_bytes_max(&self) -> u64 {
        self.budget / RETENTION_SOURCES_MIN
    }

    /// Evicts `source`'s own oldest jobs while it holds more than its
    /// quota, then what [`evict`](Self::evict) evicts.
    fn evict_for(&self, source: Source) {
        let mut jobs = self.jobs.lock().expect("retention index lock");
        let (mut count, mut bytes) = jobs
            .iter()
            .filter(|e| e.source == Some(source))
            .fold((0usize, 0u64), |(n, b), e| (n + 1, b + e.bytes));
        // The job just committed is the source's newest and is never the
        // one evicted: a source always keeps its latest job, however big.
        while count > 1 && (count > RETAINED_JOBS_PER_SOURCE_MAX || bytes > self.source_bytes_max())
        {
            let Some(at) = jobs.iter().position(|e| e.source == Some(source)) else {
                break;
            };
            let e = jobs.remove(at).expect("position is in range");
            count -= 1;
            bytes -= e.bytes;
            let _ = fs::remove_dir_all(self.job_dir(&e.job));
            tracing::info!(job = %e.job, %source, "evidence evicted: its source is over its quota");
        }
        drop(jobs);
        self.evict();
    }

    /// Evicts expired jobs, then the oldest until the rest fit.
    pub fn evict(&self) {
        let mut jobs = self.jobs.lock().expect("retention index lock");
        let now = SystemTime::now();
        let mut total: u64 = jobs.iter().map(|e| e.bytes).sum();
        while let Some(front) = jobs.front() {
            let expired = now
                .duration_since(front.created)
                .is_ok_and(|age| age > self.window);
            if !expired && total <= self.budget && jobs.len() <= MAX_RETAINED_JOBS {
                break;
            }
            let e = jobs.pop_front().expect("front exists");
            total -= e.bytes;
            let _ = fs::remove_dir_all(self.job_dir(&e.job));
            tracing::info!(job = %e.job, expired, "evidence evicted");
        }
    }

    /// The job's directory, if it is retained and within its window.
    fn find(&self, job_id: &[u8; 16]) -> Result<PathBuf, RetentionError> {
        let job = hex::encode(job_id);
        let jobs = self.jobs.lock().expect("retention index lock");
        let entry = jobs
            .iter()
            .find(|e| e.job == job)
            .ok_or_else(|| RetentionError::NotRetained(job.clone()))?;
        if SystemTime::now()
            .duration_since(entry.created)
            .is_ok_and(|age| age > self.window)
        {
            return Err(RetentionError::NotRetained(job));
        }
        Ok(self.job_dir(&job))
    }

    /// Every leaf's output hash, in order.
    pub fn leaves(&self, job_id: &[u8; 16]) -> Result<Vec<Hash>, RetentionError> {
        let dir = self.find(job_id)?;
        let idx = read_index(&dir, job_id)?;
        Ok(idx.iter().map(|r| r.2).collect())
    }

    /// Leaf `index`'s output hash and its stored data, to be streamed a
    /// chunk at a time (never read whole into memory). Reads only that
    /// leaf's index record.
    pub fn leaf_data(
        &self,
        job_id: &[u8; 16],
        index: u64,
    ) -> Result<(Hash, StoredData), RetentionError> {
        let dir = self.find(job_id)?;
        let mut f = File::open(dir.join("leaves.idx"))
            .map_err(|_| RetentionError::NotRetained(hex::encode(job_id)))?;
        let size = f.metadata()?.len() / LEAF_RECORD as u64;
        if index >= size {
            return Err(RetentionError::NoLeaf {
                job: hex::encode(job_id),
                index,
                size,
            });
        }
        f.seek(SeekFrom::Start(index * LEAF_RECORD as u64))?;
        let mut r = [0u8; LEAF_RECORD];
        f.read_exact(&mut r)?;
        let offset = u64::from_le_bytes(r[0..8].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(r[8..16].try_into().expect("8 bytes"));
        let hash: Hash = r[16..48].try_into().expect("32 bytes");
        let data = open_stored(&dir.join("leaves.bin"), offset, Some(len), job_id)?;
        Ok((hash, data))
    }

    /// Bytes of the job's leaf index: what computing an audit path reads
    /// into memory (and a little more), for the caller to reserve first.
    pub fn index_bytes(&self, job_id: &[u8; 16]) -> Result<u64, RetentionError> {
        let dir = self.find(job_id)?;
        fs::metadata(dir.join("leaves.idx"))
            .map(|m| m.len())
            .map_err(|_| RetentionError::NotRetained(hex::encode(job_id)))
    }

    /// Whether `receipt` is byte for byte the receipt retained with the
    /// job: evidence is served only against the receipt it belongs to (a
    /// job id reused after an eviction names another job).
    pub fn receipt_is(&self, job_id: &[u8; 16], receipt: &[u8]) -> Result<bool, RetentionError> {
        let dir = self.find(job_id)?;
        let path = dir.join("receipt.json");
        let len = fs::metadata(&path)
            .map_err(|_| RetentionError::NotRetained(hex::encode(job_id)))?
            .len();
        if len != receipt.len() as u64 {
            return Ok(false);
        }
        Ok(fs::read(path)? == receipt)
    }

    /// The job's receipt, exactly as this node signed it (bounded by
    /// `MAX_RECEIPT_BYTES`).
    pub fn receipt_bytes(&self, job_id: &[u8; 16]) -> Result<Vec<u8>, RetentionError> {
        let dir = self.find(job_id)?;
        read_bounded(&dir.join("receipt.json"), MAX_RECEIPT_BYTES, job_id)
    }

    /// The minisign signature file of the job's receipt.
    pub fn receipt_signature(&self, job_id: &[u8; 16]) -> Result<String, RetentionError> {
        let dir = self.find(job_id)?;
        let bytes = read_bounded(
            &dir.join("receipt.json.minisig"),
            MAX_SIGNATURE_FILE_BYTES,
            job_id,
        )?;
        String::from_utf8(bytes).map_err(|_| RetentionError::Damaged {
            job: hex::encode(job_id),
            problem: "receipt.json.minisig is not text".into(),
        })
    }

    /// The job's program, canonical postcard (bounded by
    /// `MAX_PROGRAM_BYTES`).
    pub fn program_bytes(&self, job_id: &[u8; 16]) -> Result<Vec<u8>, RetentionError> {
        let dir = self.find(job_id)?;
        read_bounded(&dir.join("program.bin"), MAX_PROGRAM_BYTES, job_id)
    }

    /// The job's tensor references, as it was given them (none for a job
    /// retained before references existed).
    pub fn references(&self, job_id: &[u8; 16]) -> Result<Vec<TensorReference>, RetentionError> {
        let dir = self.find(job_id)?;
        let path = dir.join("references.bin");
        if !path.exists() {
            return Ok(Vec::new());
        }
        let bytes = read_bounded(&path, MAX_REFERENCES_BYTES, job_id)?;
        postcard::from_bytes(&bytes).map_err(|e| RetentionError::Damaged {
            job: hex::encode(job_id),
            problem: format!("references.bin: {e}"),
        })
    }

    /// Where the job's referenced input `input` came from: the reference
    /// it was given, less the permission.
    pub fn source(&self, job_id: &[u8; 16], input: &str) -> Result<SourceEvidence, RetentionError> {
        let r = self
            .references(job_id)?
            .into_iter()
            .find(|r| r.input == input)
            .ok_or_else(|| RetentionError::NoReference {
                job: hex::encode(job_id),
                name: input.to_string(),
            })?;
        Ok(SourceEvidence {
            input: r.input,
            producer: r.producer,
            address: r.address,
            job_id: r.job_id,
            output: r.output,
            receipt: r.receipt,
            signature: r.signature,
        })
    }

    /// The stored data of the job's output with hash `sha256`, to be
    /// streamed: the last trace leaf with that hash (an output is the
    /// value its name last took), or else the input the program passed
    /// through unchanged (by the hash the receipt records for it). Reads
    /// the index one record at a time.
    pub fn output_data(
        &self,
        job_id: &[u8; 16],
        sha256: &Hash,
    ) -> Result<StoredData, RetentionError> {
        let dir = self.find(job_id)?;
        let f = File::open(dir.join("leaves.idx"))
            .map_err(|_| RetentionError::NotRetained(hex::encode(job_id)))?;
        let mut index = std::io::BufReader::new(f);
        let mut record = [0u8; LEAF_RECORD];
        let mut found = None;
        loop {
            match index.read_exact(&mut record) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e.into()),
            }
            if record[16..48] == sha256[..] {
                let offset = u64::from_le_bytes(record[0..8].try_into().expect("8 bytes"));
                let len = u64::from_le_bytes(record[8..16].try_into().expect("8 bytes"));
                found = Some((offset, len));
            }
        }
        if let Some((offset, len)) = found {
            return open_stored(&dir.join("leaves.bin"), offset, Some(len), job_id);
        }
        // An output that is an input, unchanged: the receipt says which.
        let receipt = self.receipt_bytes(job_id)?;
        let hex_sha = hex::encode(sha256);
        /// The receipt's one field this needs.
        #[derive(serde::Deserialize)]
        struct Inputs {
            inputs: std::collections::BTreeMap<String, String>,
        }
        let receipt: Inputs =
            serde_json::from_slice(&receipt).map_err(|e| RetentionError::Damaged {
                job: hex::encode(job_id),
                problem: format!("receipt.json: {e}"),
            })?;
        match receipt.inputs.iter().find(|(_, h)| **h == hex_sha) {
            Some((name, _)) => self.input_data(job_id, name),
            None => Err(RetentionError::NoOutput {
                job: hex::encode(job_id),
                sha256: hex_sha,
            }),
        }
    }

    /// The job's program input `name`, to be streamed.
    pub fn input_data(&self, job_id: &[u8; 16], name: &str) -> Result<StoredData, RetentionError> {
        let dir = self.find(job_id)?;
        let no_input = || RetentionError::NoInput {
            job: hex::encode(job_id),
            name: name.to_string(),
        };
        // Names were checked against the program's declared names when the
        // job was accepted, so only those files exist; a name with a path
        // separator or `..` cannot match one.
        if lockstep_program::check_name(name).is_err() {
            return Err(no_input());
        }
        let path = dir.join("inputs").join(format!("{name}.npy"));
        if !path.exists() {
            return Err(no_input());
        }
        open_stored(&path, 0, None, job_id)
    }

    /// Leaf `index`'s output tensor.
    #[cfg(test)]
    pub fn leaf_tensor(&self, job_id: &[u8; 16], index: u64) -> Result<Tensor, RetentionError> {
        let dir = self.find(job_id)?;
        let idx = read_index(&dir, job_id)?;
        let job = hex::encode(job_id);
        let &(offset, len, hash) =
            idx.get(index as usize)
                .ok_or_else(|| RetentionError::NoLeaf {
                    job: job.clone(),
                    index,
                    size: idx.len() as u64,
                })?;
        let damaged = |problem: String| RetentionError::Damaged {
            job: job.clone(),
            problem,
        };
        let mut f = File::open(dir.join("leaves.bin"))?;
        let file_len = f.metadata()?.len();
        if offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(damaged(format!(
                "leaf {index} lies past the end of leaves.bin"
            )));
        }
        f.seek(SeekFrom::Start(offset))?;
        let mut bytes = vec![0u8; len as usize];
        f.read_exact(&mut bytes)?;
        let t = npy::decode(&bytes).map_err(|e| damaged(e.to_string()))?;
        if t.sha256() != hash {
            return Err(damaged(format!("leaf {index} does not match its hash")));
        }
        Ok(t)
    }

    /// The job's program input `name`.
    #[cfg(test)]
    pub fn input(&self, job_id: &[u8; 16], name: &str) -> Result<Tensor, RetentionError> {
        let dir = self.find(job_id)?;
        let job = hex::encode(job_id);
        // Names were checked against the program's declared names when the
        // job was accepted, so only those files exist; a name with a path
        // separator or `..` cannot match one.
        if lockstep_program::check_name(name).is_err() {
            return Err(RetentionError::NoInput {
                job,
                name: name.to_string(),
            });
        }
        let path = dir.join("inputs").join(format!("{name}.npy"));
        if !path.exists() {
            return Err(RetentionError::NoInput {
                job,
                name: name.to_string(),
            });
        }
        npy::read_file(&path).map_err(|e| RetentionError::Damaged {
            job,
            problem: e.to_string(),
        })
    }
}

/// A stored tensor's data, ready to stream: its shape, and its file
/// positioned at the first data byte (`len` bytes of little-endian f32
/// follow, exactly the wire's data chunks).
pub struct StoredData {
    pub shape: Vec<u64>,
    pub file: File,
    pub len: u64,
}

/// Opens the `.npy` bytes at `offset` of `path` (`len` of them, or to the
/// end of the file), checking that header and length agree.
fn open_stored(
    path: &Path,
    offset: u64,
    len: Option<u64>,
    job_id: &[u8; 16],
) -> Result<StoredData, RetentionError> {
    let damaged = |problem: String| RetentionError::Damaged {
        job: hex::encode(job_id),
        problem,
    };
    let mut f = File::open(path)?;
    let file_len = f.metadata()?.len();
    let len = len.unwrap_or(file_len.saturating_sub(offset));
    if offset.checked_add(len).is_none_or(|end| end > file_len) {
        return Err(damaged(format!(
            "{} is shorter than its index says",
            path.display()
        )));
    }
    f.seek(SeekFrom::Start(offset))?;
    let head_len = len.min(lockstep_limits::MAX_NPY_HEADER_BYTES as u64 + 16) as usize;
    let mut head = vec![0u8; head_len];
    f.read_exact(&mut head)?;
    let (shape, data_start) = npy::decode_prefix(&head).map_err(|e| damaged(e.to_string()))?;
    let data_len = shape.iter().product::<usize>() as u64 * 4;
    if data_start as u64 + data_len != len {
        return Err(damaged(format!(
            "a tensor in {} does not fill its record",
            path.display()
        )));
    }
    f.seek(SeekFrom::Start(offset + data_start as u64))?;
    Ok(StoredData {
        shape: shape.iter().map(|&d| d as u64).collect(),
        file: f,
        len: data_len,
    })
}

/// A retained file, read whole if it is at most `max` bytes; a missing
/// file means the job is not (or no longer) retained.
fn read_bounded(path: &Path, max: usize, job_id: &[u8; 16]) -> Result<Vec<u8>, RetentionError> {
    let f = File::open(path).map_err(|_| RetentionError::NotRetained(hex::encode(job_id)))?;
    let mut bytes = Vec::new();
    f.take(max as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(RetentionError::Damaged {
            job: hex::encode(job_id),
            problem: format!("{} is over its {max}-byte bound", path.display()),
        });
    }
    Ok(bytes)
}

fn read_index(dir: &Path, job_id: &[u8; 16]) -> Result<Vec<(u64, u64, Hash)>, RetentionError> {
    let bytes = fs::read(dir.join("leaves.idx"))
        .map_err(|_| RetentionError::NotRetained(hex::encode(job_id)))?;
    if bytes.len() % LEAF_RECORD != 0 {
        return Err(RetentionError::Damaged {
            job: hex::encode(job_id),
            problem: "leaves.idx is truncated".into(),
        });
    }
    Ok(bytes
        .chunks_exact(LEAF_RECORD)
        .map(|r| {
            let offset = u64::from_le_bytes(r[0..8].try_into().expect("8 bytes"));
            let len = u64::from_le_bytes(r[8..16].try_into().expect("8 bytes"));
            let hash: Hash = r[16..48].try_into().expect("32 bytes");
            (offset, len, hash)
        })
        .collect())
}

/// A job being retained: leaves are appended as the worker produces them.
pub struct Pending {
    leaves: BufWriter<File>,
    index: Vec<u8>,
    offset: u64,
    bytes: u64,
    /// The most this job may write: the byte budget, or less when the
    /// filesystem had less room above its floor at the start.
    budget: u64,
    source: Source,
    over_budget: bool,
    failed: Option<RetentionError>,
    tmp: PathBuf,
    job: String,
}

impl Pending {
    /// Appends one leaf. Failures are remembered (the job still runs and
    /// gets its receipt; only its evidence is lost).
    pub fn push(&mut self, output_sha256: &Hash, t: &Tensor) {
        if self.failed.is_some() || self.over_budget {
            return;
        }
        // The length first, so nothing is written past the room, and the
        // bytes streamed to disk without a second copy of the tensor.
        let len = npy::encoded_len(t);
        self.bytes += len + LEAF_RECORD as u64;
        if self.bytes > self.budget {
            // Stop writing: a job larger than its room could never be
            // kept, and must not fill the disk trying.
            self.over_budget = true;
            return;
        }
        let leaves = &mut self.leaves;
        if let Err(e) = npy::emit(t, |piece| leaves.write_all(piece)) {
            self.failed = Some(e.into());
            return;
        }
        self.index.extend_from_slice(&self.offset.to_le_bytes());
        self.index.extend_from_slice(&len.to_le_bytes());
        self.index.extend_from_slice(output_sha256);
        self.offset += len;
    }

    /// Drops a job that failed: nothing is kept.
    pub fn abandon(self) {
        let _ = fs::remove_dir_all(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn job(r: &Retention, id: u8, leaves: usize) -> [u8; 16] {
        let job_id = [id; 16];
        let x = Tensor::filled(vec![64], id as u64, lockstep_tensor::Fill::Uniform).unwrap();
        let mut p = r
            .begin(
                &job_id,
                Source::V4([10, 0, 0, id]),
                b"program",
                &BTreeMap::from([("x".to_string(), x.clone())]),
                &[],
            )
            .unwrap();
        for _ in 0..leaves {
            p.push(&x.sha256(), &x);
        }
        r.commit(p, b"{}", "sig");
        job_id
    }

    #[test]
    fn leaves_and_inputs_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let r = Retention::open(dir.path(), Duration::from_secs(60), 1 << 20, 0).unwrap();
        let id = job(&r, 1, 3);
        assert_eq!(r.leaves(&id).unwrap().len(), 3);
        let t = r.leaf_tensor(&id, 2).unwrap();
        assert_eq!(t.sha256(), r.leaves(&id).unwrap()[2]);
        assert!(matches!(
            r.leaf_tensor(&id, 3),
            Err(RetentionError::NoLeaf { .. })
        ));
        assert!(r.input(&id, "x").is_ok());
        assert!(matches!(
            r.input(&id, "../x"),
            Err(RetentionError::NoInput { .. })
        ));
        assert!(matches!(
            r.leaves(&[9; 16]),
            Err(RetentionError::NotRetained(_))
        ));
        // Reopening finds it again; a half-written job is cleaned up.
        fs::create_dir_all(dir.path().join("retained").join("ab.tmp")).unwrap();
        drop(r);
        let r = Retention::open(dir.path(), Duration::from_secs(60), 1 << 20, 0).unwrap();
        assert_eq!(r.leaves(&id).unwrap().len(), 3);
        assert!(!dir.path().join("retained").join("ab.tmp").exists());
    }

    #[test]
    fn the_oldest_jobs_are_evicted_to_fit_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        // Each job is about 2.1 KB (a 384-byte .npy input, four leaves of
        // 384 bytes plus 48 of index), each from its own source. A source
        // may keep an eighth of the 20 000 bytes (one job); nine jobs fit
        // in all, ten do not.
        let r = Retention::open(dir.path(), Duration::from_secs(60), 20_000, 0).unwrap();
        let ids: Vec<_> = (1..=9).map(|i| job(&r, i, 4)).collect();
        assert!(ids.iter().all(|id| r.leaves(id).is_ok()));
        let last = job(&r, 10, 4);
        assert!(matches!(
            r.leaves(&ids[0]),
            Err(RetentionError::NotRetained(_))
        ));
        assert!(!dir
            .path()
            .join("retained")
            .join(hex::encode(ids[0]))
            .exists());
        assert!(r.leaves(&ids[1]).is_ok() && r.leaves(&last).is_ok());
        // A job larger than its source's share is not kept at all, and
        // evicts nobody.
        let big = job(&r, 11, 100);
        assert!(r.leaves(&big).is_err());
        assert!(r.leaves(&ids[1]).is_ok() && r.leaves(&last).is_ok());
    }

    fn job_from(r: &Retention, job_id: [u8; 16], source: Source) -> bool {
        let x = Tensor::filled(vec![4], 1, lockstep_tensor::Fill::Uniform).unwrap();
        let Some(mut p) = r.begin(
            &job_id,
            source,
            b"p",
            &BTreeMap::from([("x".to_string(), x.clone())]),
            &[],
        ) else {
            return false;
        };
        p.push(&x.sha256(), &x);
        r.commit(p, b"{}", "sig");
        true
    }

    #[test]
    fn a_flood_from_one_source_evicts_only_its_own_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let r = Retention::open(dir.path(), Duration::from_secs(60), 1 << 30, 0).unwrap();
        let honest = Source::V4([10, 0, 0, 1]);
        let flood = Source::V4([10, 0, 0, 2]);
        assert!(job_from(&r, [0xaa; 16], honest));
        let n = RETAINED_JOBS_PER_SOURCE_MAX + 20;
        for i in 0..n {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            assert!(job_from(&r, id, flood));
        }
        assert!(r.holds(&[0xaa; 16]), "the honest job survives the flood");
        let jobs = r.jobs.lock().unwrap();
        let flooded = jobs.iter().filter(|e| e.source == Some(flood)).count();
        assert_eq!(flooded, RETAINED_JOBS_PER_SOURCE_MAX);
        // The flood's oldest went; its newest stayed.
        assert!(!jobs.iter().any(|e| e.job == hex::encode([0u8; 16])));
        drop(jobs);
        // Sources survive a restart.
        drop(r);
        let r = Retention::open(dir.path(), Duration::from_secs(60), 1 << 30, 0).unwrap();
        let jobs = r.jobs.lock().unwrap();
        assert_eq!(
            jobs.iter().filter(|e| e.source == Some(honest)).count(),
            1,
            "the honest job's source is read back"
        );
    }

    #[test]
    fn nothing_is_written_below_the_free_space_floor() {
        let dir = tempfile::tempdir().unwrap();
        let r =
            Retention::open(dir.path(), Duration::from_secs(60), 1 << 20, u64::MAX / 2).unwrap();
        assert!(!job_from(&r, [1; 16], Source::V4([10, 0, 0, 1])));
        let left: Vec<_> = fs::read_dir(dir.path().join("retained")).unwrap().collect();
        assert!(left.is_empty(), "no directory, no file: {left:?}");
    }

    #[test]
    fn stored_data_streams_what_the_tensor_holds() {
        let dir = tempfile::tempdir().unwrap();
        let r = Retention::open(dir.path(), Duration::from_secs(60), 1 << 20, 0).unwrap();
        let id = job(&r, 1, 3);
        let (hash, mut d) = r.leaf_data(&id, 1).unwrap();
        let t = r.leaf_tensor(&id, 1).unwrap();
        assert_eq!(hash, t.sha256());
        assert_eq!(d.shape, vec![64]);
        let mut bytes = Vec::new();
        d.file.read_to_end(&mut bytes).unwrap();
        // Leaves are stored back to back: the data is the first len bytes.
        let want: Vec<u8> = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(&bytes[..d.len as usize], &want[..]);
        let mut input = r.input_data(&id, "x").unwrap();
        let mut got = Vec::new();
        input.file.read_to_end(&mut got).unwrap();
        assert_eq!(got.len() as u64, input.len);
        assert!(matches!(
            r.input_data(&id, "../x"),
            Err(RetentionError::NoInput { .. })
        ));
    }

    #[test]
    fn a_reused_job_id_never_replaces_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let r = Retention::open(dir.path(), Duration::from_secs(60), 1 << 20, 0).unwrap();
        assert!(!r.holds(&[1; 16]));
        let id = job(&r, 1, 3);
        assert!(r.holds(&id));
        // The same id committed again (a race past the submission check).
        job(&r, 1, 1);
        assert_eq!(r.leaves(&id).unwrap().len(), 3);
    }

    #[test]
    fn jobs_past_the_window_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let r = Retention::open(dir.path(), Duration::from_millis(50), 1 << 20, 0).unwrap();
        let a = job(&r, 1, 2);
        assert!(r.leaves(&a).is_ok());
        std::thread::sleep(Duration::from_millis(100));
        assert!(matches!(r.leaves(&a), Err(RetentionError::NotRetained(_))));
        job(&r, 2, 1);
        assert!(!dir.path().join("retained").join(hex::encode(a)).exists());
    }
    fn reference(input: &str) -> TensorReference {
        TensorReference {
            input: input.into(),
            producer: "producer".into(),
            address: "127.0.0.1:4433".into(),
            job_id: [3; 16],
            output: "w".into(),
            sha256: [4; 32],
            receipt: b"{\"receipt\":1}".to_vec(),
            signature: "sig".into(),
            permission: lockstep_protocol::Permission {
                statement: b"{}".to_vec(),
                signature: "perm".into(),
            },
        }
    }

    /// A job with input `x` (given), `y` (a reference), three leaves of
    /// which the middle one differs, and a receipt naming `x`'s hash.
    fn referencing_job(r: &Retention, id: u8) -> ([u8; 16], Tensor, Tensor) {
        let job_id = [id; 16];
        let x = Tensor::filled(vec![8], 1, lockstep_tensor::Fill::Uniform).unwrap();
        let y = Tensor::filled(vec![2, 3], 2, lockstep_tensor::Fill::Uniform).unwrap();
        let mut p = r
            .begin(
                &job_id,
                Source::V4([10, 0, 0, id]),
                b"the program",
                &BTreeMap::from([("x".to_string(), x.clone()), ("y".to_string(), y.clone())]),
                &[reference("y")],
            )
            .unwrap();
        p.push(&y.sha256(), &y);
        p.push(&x.sha256(), &x);
        p.push(&y.sha256(), &y);
        let receipt = format!("{{\"inputs\":{{\"x\":\"{}\"}}}}", x.sha256_hex());
        r.commit(p, receipt.as_bytes(), "the signature");
        (job_id, x, y)
    }

    fn read_all(mut d: StoredData) -> Vec<u8> {
        let mut bytes = Vec::new();
        (&mut d.file).take(d.len).read_to_end(&mut bytes).unwrap();
        bytes
    }

    fn le(t: &Tensor) -> Vec<u8> {
        t.data().iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn references_programs_and_receipts_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let r = Retention::open(dir.path(), Duration::from_secs(60), 1 << 20, 0).unwrap();
        let (id, _, _) = referencing_job(&r, 1);
        assert_eq!(r.references(&id).unwrap(), vec![reference("y")]);
        let s = r.source(&id, "y").unwrap();
        let want = reference("y");
        assert_eq!(
            (
                s.input,
                s.producer,
                s.address,
                s.job_id,
                s.output,
                s.receipt,
                s.signature
            ),
            (
                want.input,
                want.producer,
                want.address,
                want.job_id,
                want.output,
                want.receipt,
                want.signature
            )
        );
        assert!(matches!(
            r.source(&id, "x"),
            Err(RetentionError::NoReference { .. })
        ));
        assert_eq!(r.program_bytes(&id).unwrap(), b"the program");
        assert!(r.receipt_bytes(&id).unwrap().starts_with(b"{\"inputs\""));
        assert_eq!(r.receipt_signature(&id).unwrap(), "the signature");
        // A job without references has an empty references.bin.
        let plain = job(&r, 2, 1);
        assert!(r.references(&plain).unwrap().is_empty());
        assert!(dir
            .path()
            .join("retained")
            .join(hex::encode(plain))
            .join("references.bin")
            .exists());
        // A job retained before references existed has none.
        fs::remove_file(
            dir.path()
                .join("retained")
                .join(hex::encode(plain))
                .join("references.bin"),
        )
        .unwrap();
        assert!(r.source(&plain, "x").is_err());
        assert!(matches!(
            r.program_bytes(&[9; 16]),
            Err(RetentionError::NotRetained(_))
        ));
    }

    #[test]
    fn an_output_is_found_by_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let r = Retention::open(dir.path(), Duration::from_secs(60), 1 << 20, 0).unwrap();
        let (id, x, y) = referencing_job(&r, 1);
        // The last leaf with the hash: leaf 2, after leaf 0 with the same.
        let d = r.output_data(&id, &y.sha256()).unwrap();
        assert_eq!(d.shape, vec![2, 3]);
        assert_eq!(d.len, 24);
        assert_eq!(read_all(d), le(&y));
        let d = r.output_data(&id, &x.sha256()).unwrap();
        assert_eq!(read_all(d), le(&x));
        assert!(matches!(
            r.output_data(&id, &[0; 32]),
            Err(RetentionError::NoOutput { .. })
        ));
        // An output that is an input, unchanged (no leaf has its hash).
        let z = Tensor::filled(vec![5], 9, lockstep_tensor::Fill::Uniform).unwrap();
        let job_id = [7; 16];
        let mut p = r
            .begin(
                &job_id,
                Source::V4([10, 0, 0, 7]),
                b"p",
                &BTreeMap::from([("z".to_string(), z.clone())]),
                &[],
            )
            .unwrap();
        p.push(&x.sha256(), &x);
        let receipt = format!("{{\"inputs\":{{\"z\":\"{}\"}}}}", z.sha256_hex());
        r.commit(p, receipt.as_bytes(), "s");
        let d = r.output_data(&job_id, &z.sha256()).unwrap();
        assert_eq!(read_all(d), le(&z));
    }

    #[test]
    fn a_job_past_its_window_is_not_retained_before_eviction_runs() {
        let dir = tempfile::tempdir().unwrap();
        let r = Retention::open(dir.path(), Duration::from_millis(50), 1 << 20, 0).unwrap();
        let (id, _, y) = referencing_job(&r, 1);
        assert!(r.output_data(&id, &y.sha256()).is_ok());
        std::thread::sleep(Duration::from_millis(100));
        // Nothing has evicted it yet: its directory is still there.
        assert!(dir.path().join("retained").join(hex::encode(id)).exists());
        assert!(matches!(
            r.output_data(&id, &y.sha256()),
            Err(RetentionError::NotRetained(_))
        ));
        assert!(matches!(
            r.receipt_bytes(&id),
            Err(RetentionError::NotRetained(_))
        ));
        assert!(matches!(
            r.source(&id, "y"),
            Err(RetentionError::NotRetained(_))
        ));
        assert!(matches!(
            r.program_bytes(&id),
            Err(RetentionError::NotRetained(_))
        ));
    }
}
