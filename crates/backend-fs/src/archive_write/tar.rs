//! Tar entry headers as the archive writer writes them: ustar, with a PAX
//! header carrying the path when it is longer than ustar allows (sha512
//! blob names are).

use orca_core::{Error, Result};

/// The tar block size.
pub(super) const BLOCK: u64 = 512;

/// The bytes a header takes: a ustar header, plus a PAX header carrying
/// the path when it does not fit (sha512 blob names do not).
pub(super) fn header_len(name: &str) -> u64 {
    if name.len() <= 100 {
        BLOCK
    } else {
        let record = pax_record(name).len() as u64;
        BLOCK + record.div_ceil(BLOCK) * BLOCK + BLOCK
    }
}

fn pax_record(name: &str) -> String {
    let body = format!(" path={name}\n");
    // The record's length counts its own digits.
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len = len.to_string().len() + body.len();
    }
    format!("{len}{body}")
}

fn ustar(name: &[u8], size: u64, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    let field = &mut header.as_old_mut().name;
    let n = name.len().min(field.len());
    field[..n].copy_from_slice(&name[..n]);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(kind);
    header.set_cksum();
    header
}

/// The header bytes of an entry.
pub(super) fn header(name: &str, size: u64) -> Result<Vec<u8>> {
    if name.is_empty() || name.starts_with('/') || name.split('/').any(|p| p == "..") {
        return Err(Error::InvalidInput {
            what: format!("archive entry {name:?}"),
            reason: "it is not a relative path inside the archive".into(),
        });
    }
    let mut bytes = Vec::new();
    if name.len() > 100 {
        let record = pax_record(name);
        let pax = ustar(
            b"././@PaxHeader",
            record.len() as u64,
            tar::EntryType::XHeader,
        );
        bytes.extend_from_slice(pax.as_bytes());
        bytes.extend_from_slice(record.as_bytes());
        let padding = (BLOCK - record.len() as u64 % BLOCK) % BLOCK;
        bytes.extend(std::iter::repeat_n(0u8, padding as usize));
    }
    bytes.extend_from_slice(ustar(name.as_bytes(), size, tar::EntryType::Regular).as_bytes());
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::{header, header_len, pax_record};

    #[test]
    fn long_names_get_a_pax_header() {
        let short = "blobs/sha256/".to_owned() + &"a".repeat(64);
        assert_eq!(
            header(&short, 1).expect("header").len() as u64,
            header_len(&short)
        );
        let long = "blobs/sha512/".to_owned() + &"b".repeat(128);
        let bytes = header(&long, 1).expect("header");
        assert_eq!(bytes.len() as u64, header_len(&long));
        let record = pax_record(&long);
        let (len, _) = record.split_once(' ').expect("length");
        assert_eq!(len.parse::<usize>().expect("number"), record.len());
        // The tar crate reads the whole name back.
        let mut tar_bytes = bytes;
        tar_bytes.extend_from_slice(&[b'x'; 1]);
        tar_bytes.extend(std::iter::repeat_n(0u8, 511 + 1024));
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let entry = archive
            .entries()
            .expect("entries")
            .next()
            .expect("one")
            .expect("entry");
        assert_eq!(entry.path_bytes().as_ref(), long.as_bytes());
    }
}
