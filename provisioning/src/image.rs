//! Provisioning an appliance image before it is flashed: the fleet's
//! settings (trusted operator and certifier keys, listen address) written
//! as `lockstep/provision.toml` into the image's EFI system partition, where
//! `lockstepd --provision` reads them (image/README.md).
//!
//! Only the ESP changes: the dm-verity root and its root hash stay as
//! signed. The GPT is read here (UEFI spec §5.3) to find the partition
//! named `ESP`; the FAT file system inside it is edited in place.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use lockstep_identity::NodeId;

/// Where `lockstepd` on the appliance looks (under the ESP's root).
pub const PROVISION_DIR: &str = "lockstep";
pub const PROVISION_FILE: &str = "provision.toml";
/// The GPT partition name the image builder gives its ESP.
pub const ESP_NAME: &str = "ESP";
/// A provisioning file is a few keys: anything larger is a mistake.
pub const MAX_PROVISION_BYTES: usize = 16 * 1024;

const SECTOR: u64 = 512;
/// GPT entry arrays are at most this many entries here (the spec's usual
/// 128); a header claiming more is refused rather than trusted.
const MAX_GPT_ENTRIES: u32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0} has no GPT (is it a Lockstep image, built by `make image`?)")]
    NoGpt(PathBuf),
    #[error("{0} has no partition named \"{ESP_NAME}\" (is it a Lockstep image?)")]
    NoEsp(PathBuf),
    #[error("the ESP of {path} is not a FAT file system this tool can write: {message}")]
    Fat { path: PathBuf, message: String },
    #[error("the provisioning file would be {0} bytes; at most {MAX_PROVISION_BYTES}")]
    TooLarge(usize),
}

/// What goes into the provisioning file.
#[derive(Debug, Clone, Default)]
pub struct Provision {
    pub trusted_operators: Vec<NodeId>,
    pub trusted_certifiers: Vec<NodeId>,
    pub listen: Option<std::net::SocketAddr>,
}

impl Provision {
    /// The file's text: a `lockstepd` configuration fragment.
    pub fn to_toml(&self) -> String {
        let keys = |ks: &[NodeId]| {
            ks.iter()
                .map(|k| format!("\"{}\"", k.to_base64()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = String::from("# Written by lockstep-fleet provision-image.\n");
        s += &format!("trusted_operators = [{}]\n", keys(&self.trusted_operators));
        if !self.trusted_certifiers.is_empty() {
            s += &format!(
                "trusted_certifiers = [{}]\n",
                keys(&self.trusted_certifiers)
            );
        }
        if let Some(addr) = self.listen {
            s += &format!("listen = \"{addr}\"\n");
        }
        s
    }
}

/// Writes `provision` into the ESP of the raw disk image at `image`,
/// replacing any earlier provisioning file. Returns the ESP's byte range.
pub fn write_provision(image: &Path, provision: &Provision) -> Result<(u64, u64), ImageError> {
    let text = provision.to_toml();
    if text.len() > MAX_PROVISION_BYTES {
        return Err(ImageError::TooLarge(text.len()));
    }
    with_esp(image, |fs| {
        let dir = fs.root_dir().create_dir(PROVISION_DIR)?;
        let mut f = dir.create_file(PROVISION_FILE)?;
        f.truncate()?;
        f.write_all(text.as_bytes())?;
        f.flush()
    })
    .map(|((start, len), ())| (start, len))
}

/// Reads the provisioning file back (for checks and `--show`).
pub fn read_provision(image: &Path) -> Result<Option<String>, ImageError> {
    with_esp(image, |fs| {
        let path = format!("{PROVISION_DIR}/{PROVISION_FILE}");
        let Ok(mut f) = fs.root_dir().open_file(&path) else {
            return Ok(None);
        };
        let mut s = String::new();
        Read::by_ref(&mut f)
            .take(MAX_PROVISION_BYTES as u64 + 1)
            .read_to_string(&mut s)?;
        Ok(Some(s))
    })
    .map(|(_, text)| text)
}

type EspFs<'a> = fatfs::FileSystem<Slice<'a>>;

/// Opens the ESP's FAT file system inside `image`, runs `work` on it, and
/// unmounts and syncs; returns the ESP's byte range and `work`'s result.
fn with_esp<R>(
    image: &Path,
    work: impl FnOnce(&EspFs<'_>) -> io::Result<R>,
) -> Result<((u64, u64), R), ImageError> {
    let io_err = |source| ImageError::Io {
        path: image.to_path_buf(),
        source,
    };
    let fat_err = |e: io::Error| ImageError::Fat {
        path: image.to_path_buf(),
        message: e.to_string(),
    };
    let mut file = File::options()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io_err)?;
    let (start, len) = find_esp(&mut file, image)?;
    let part = Slice {
        file: &mut file,
        start,
        len,
        pos: 0,
    };
    let fs = fatfs::FileSystem::new(part, fatfs::FsOptions::new()).map_err(fat_err)?;
    let out = work(&fs).map_err(fat_err)?;
    fs.unmount().map_err(fat_err)?;
    file.sync_all().map_err(io_err)?;
    Ok(((start, len), out))
}

/// The byte range of the partition named `ESP`, from the primary GPT.
fn find_esp(file: &mut File, image: &Path) -> Result<(u64, u64), ImageError> {
    let io_err = |source| ImageError::Io {
        path: image.to_path_buf(),
        source,
    };
    let disk_len = file.metadata().map_err(io_err)?.len();
    let mut header = [0u8; SECTOR as usize];
    file.seek(SeekFrom::Start(SECTOR)).map_err(io_err)?;
    if file.read_exact(&mut header).is_err() || &header[0..8] != b"EFI PART" {
        return Err(ImageError::NoGpt(image.to_path_buf()));
    }
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let entries_lba = u64_at(&header, 72);
    let count = u32_at(&header, 80);
    let entry_size = u32_at(&header, 84) as usize;
    if count > MAX_GPT_ENTRIES || !(128..=4096).contains(&entry_size) {
        return Err(ImageError::NoGpt(image.to_path_buf()));
    }
    let mut entries = vec![0u8; count as usize * entry_size];
    file.seek(SeekFrom::Start(entries_lba.saturating_mul(SECTOR)))
        .map_err(io_err)?;
    file.read_exact(&mut entries)
        .map_err(|_| ImageError::NoGpt(image.to_path_buf()))?;
    for e in entries.chunks_exact(entry_size) {
        if e[0..16].iter().all(|&b| b == 0) {
            continue;
        }
        // The name: 36 UTF-16LE code units at offset 56.
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        if String::from_utf16_lossy(&units) != ESP_NAME {
            continue;
        }
        let (first, last) = (u64_at(e, 32), u64_at(e, 40));
        let start = first.saturating_mul(SECTOR);
        let end = last.saturating_add(1).saturating_mul(SECTOR);
        if first == 0 || end <= start || end > disk_len {
            return Err(ImageError::NoEsp(image.to_path_buf()));
        }
        return Ok((start, end - start));
    }
    Err(ImageError::NoEsp(image.to_path_buf()))
}

/// One partition of the disk file as a stream of its own, bounded so the
/// FAT code cannot read or write outside it.
struct Slice<'a> {
    file: &'a mut File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for Slice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.file.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for Slice<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the ESP",
            ));
        }
        let n = (buf.len() as u64).min(left) as usize;
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let put = self.file.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Slice<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(o) => Some(o),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(t) if t <= self.len => {
                self.pos = t;
                Ok(t)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the ESP",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk image with a GPT whose one partition, named `name`, holds a
    /// fresh FAT file system: what `image/build.sh` lays out, in miniature.
    fn disk_with_partition(path: &Path, name: &str) {
        let (first, sectors) = (2048u64, 16384u64);
        let mut disk = vec![0u8; ((first + sectors + 40) * SECTOR) as usize];
        let h = SECTOR as usize;
        disk[h..h + 8].copy_from_slice(b"EFI PART");
        disk[h + 72..h + 80].copy_from_slice(&2u64.to_le_bytes());
        disk[h + 80..h + 84].copy_from_slice(&128u32.to_le_bytes());
        disk[h + 84..h + 88].copy_from_slice(&128u32.to_le_bytes());
        let e = 2 * SECTOR as usize;
        disk[e..e + 16].copy_from_slice(&[0xAB; 16]); // any non-zero type
        disk[e + 32..e + 40].copy_from_slice(&first.to_le_bytes());
        disk[e + 40..e + 48].copy_from_slice(&(first + sectors - 1).to_le_bytes());
        for (i, u) in name.encode_utf16().enumerate() {
            disk[e + 56 + 2 * i..e + 58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        std::fs::write(path, &disk).unwrap();
        let mut file = File::options().read(true).write(true).open(path).unwrap();
        let mut part = Slice {
            file: &mut file,
            start: first * SECTOR,
            len: sectors * SECTOR,
            pos: 0,
        };
        fatfs::format_volume(&mut part, fatfs::FormatVolumeOptions::new()).unwrap();
    }

    #[test]
    fn provisioning_is_written_into_the_esp_and_replaced_on_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.raw");
        disk_with_partition(&img, ESP_NAME);
        let before = std::fs::read(&img).unwrap();
        assert_eq!(read_provision(&img).unwrap(), None);
        let op = lockstep_identity::SigningKey::generate();
        let mut p = Provision {
            trusted_operators: vec![op.public().clone()],
            ..Provision::default()
        };
        let (start, len) = write_provision(&img, &p).unwrap();
        assert_eq!(read_provision(&img).unwrap(), Some(p.to_toml()));
        // Nothing outside the ESP changed.
        let after = std::fs::read(&img).unwrap();
        assert_eq!(before[..start as usize], after[..start as usize]);
        assert_eq!(
            before[(start + len) as usize..],
            after[(start + len) as usize..]
        );
        // A second write replaces the first, shorter or longer.
        p.trusted_certifiers = vec![lockstep_identity::SigningKey::generate().public().clone()];
        write_provision(&img, &p).unwrap();
        assert_eq!(read_provision(&img).unwrap(), Some(p.to_toml()));
        p.trusted_certifiers.clear();
        write_provision(&img, &p).unwrap();
        assert_eq!(read_provision(&img).unwrap(), Some(p.to_toml()));
    }

    #[test]
    fn an_image_without_an_esp_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.raw");
        disk_with_partition(&img, "data");
        let err = write_provision(&img, &Provision::default()).unwrap_err();
        assert!(matches!(err, ImageError::NoEsp(_)), "{err}");
    }

    #[test]
    fn a_file_without_gpt_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.raw");
        std::fs::write(&p, vec![0u8; 8192]).unwrap();
        let err = write_provision(&p, &Provision::default()).unwrap_err();
        assert!(matches!(err, ImageError::NoGpt(_)), "{err}");
    }

    #[test]
    fn toml_lists_the_keys() {
        let key = lockstep_identity::SigningKey::generate();
        let p = Provision {
            trusted_operators: vec![key.public().clone()],
            trusted_certifiers: vec![],
            listen: Some("0.0.0.0:4433".parse().unwrap()),
        };
        let text = p.to_toml();
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            table["trusted_operators"].as_array().unwrap()[0].as_str(),
            Some(key.public().to_base64().as_str())
        );
        assert_eq!(table["listen"].as_str(), Some("0.0.0.0:4433"));
        assert!(!table.contains_key("trusted_certifiers"));
    }
}
