//! The on-disk batch format.
//!
//! ```text
//! byte  0  base_offset    u64 LE   offset of the first record
//! byte  8  batch_len      u32 LE   whole batch in bytes, this header included
//! byte 12  crc            u32 LE   CRC32C of bytes [0, 12) then [16, batch_len)
//! byte 16  magic          u8       format version, 1
//! byte 17  flags          u8       reserved, 0
//! byte 18  record_count   u32 LE   >= 1
//! byte 22  timestamp_ms   i64 LE   append time of every record of the batch
//! byte 30  records        record_count x { len u32 LE, len bytes }
//! ```
//!
//! The CRC covers every field but itself, so a flipped bit anywhere, offsets included, is caught.

use bytes::Bytes;

/// Bytes of the batch header.
pub const BATCH_HEADER_BYTES: usize = 30;
/// Bytes of framing before each record.
pub const RECORD_HEADER_BYTES: usize = 4;
/// Current format version.
pub const MAGIC: u8 = 1;
/// Largest offset a log holds (2^62): offsets never come near overflowing.
pub const OFFSET_MAX: u64 = 1 << 62;

/// Encoded size of a batch of `count` records totalling `payload_bytes`.
pub fn batch_len_for(count: u64, payload_bytes: u64) -> u64 {
    BATCH_HEADER_BYTES as u64 + count * RECORD_HEADER_BYTES as u64 + payload_bytes
}

/// The parsed fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Whole batch in bytes, header included.
    pub batch_len: u32,
    /// Stored CRC32C.
    pub crc: u32,
    /// Format version.
    pub magic: u8,
    /// Reserved, 0.
    pub flags: u8,
    /// Records in the batch, at least 1.
    pub record_count: u32,
    /// Append time shared by the batch's records.
    pub timestamp_ms: i64,
}

impl BatchHeader {
    /// Parses the fixed header. `buf` must hold at least [`BATCH_HEADER_BYTES`].
    pub fn parse(buf: &[u8]) -> BatchHeader {
        assert!(buf.len() >= BATCH_HEADER_BYTES, "caller checks the header fits");
        let u64_at = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
        BatchHeader {
            base_offset: u64_at(0),
            batch_len: u32_at(8),
            crc: u32_at(12),
            magic: buf[16],
            flags: buf[17],
            record_count: u32_at(18),
            timestamp_ms: u64_at(22) as i64,
        }
    }

    /// Offset after the last record of the batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    /// Checks what can be checked without the body: version, flags, and that the length is
    /// plausible for the record count and fits in `available` bytes. Returns what is wrong.
    pub fn check_frame(&self, available: u64) -> Result<(), String> {
        if self.magic != MAGIC {
            return Err(format!("unknown batch format version {}", self.magic));
        }
        if self.flags != 0 {
            return Err(format!("reserved flags are {:#04x}, expected 0", self.flags));
        }
        if self.record_count == 0 {
            return Err("batch claims 0 records".into());
        }
        let min_len = batch_len_for(self.record_count.into(), 0);
        if u64::from(self.batch_len) < min_len {
            return Err(format!(
                "batch length {} is too small for {} records (at least {min_len})",
                self.batch_len, self.record_count
            ));
        }
        if self.batch_len > crate::config::BATCH_BYTES_MAX_MAX {
            return Err(format!("batch length {} is above the largest possible batch", self.batch_len));
        }
        if self.base_offset > OFFSET_MAX {
            return Err(format!("base offset {} is above the largest offset {OFFSET_MAX}", self.base_offset));
        }
        if u64::from(self.batch_len) > available {
            return Err(format!(
                "batch length {} runs past the end of the segment ({available} bytes left)",
                self.batch_len
            ));
        }
        Ok(())
    }
}

/// Encodes a batch whose base offset and timestamp are filled in later by [`seal`].
pub fn encode<R: AsRef<[u8]>>(records: &[R], out: &mut Vec<u8>) {
    out.clear();
    out.resize(BATCH_HEADER_BYTES, 0);
    out[16] = MAGIC;
    out[18..22].copy_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        let r = r.as_ref();
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    let len = out.len() as u32;
    out[8..12].copy_from_slice(&len.to_le_bytes());
}

/// Fills in the base offset and timestamp of an encoded batch and computes its CRC.
pub fn seal(batch: &mut [u8], base_offset: u64, timestamp_ms: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_le_bytes());
    batch[22..30].copy_from_slice(&timestamp_ms.to_le_bytes());
    let crc = checksum(batch);
    batch[12..16].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(batch: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&batch[0..12]);
    crc32c::crc32c_append(crc, &batch[16..])
}

/// Fully validates a complete batch (`batch.len() == header.batch_len`): CRC and record framing.
pub fn verify(header: &BatchHeader, batch: &[u8]) -> Result<(), String> {
    debug_assert_eq!(batch.len(), header.batch_len as usize);
    let crc = checksum(batch);
    if crc != header.crc {
        return Err(format!("CRC32C mismatch: stored {:#010x}, computed {crc:#010x}", header.crc));
    }
    // A valid CRC over a frame that does not parse means a writer bug, not bit rot; still never
    // trust it.
    let mut pos = BATCH_HEADER_BYTES;
    for i in 0..header.record_count {
        let Some(len_bytes) = batch.get(pos..pos + RECORD_HEADER_BYTES) else {
            return Err(format!("record {i} framing runs past the batch"));
        };
        let len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        pos += RECORD_HEADER_BYTES;
        if len > batch.len() - pos {
            return Err(format!("record {i} claims {len} bytes, past the end of the batch"));
        }
        pos += len;
    }
    if pos != batch.len() {
        return Err(format!("{} trailing bytes after the last record", batch.len() - pos));
    }
    Ok(())
}

/// Iterates the records of a verified batch held in `batch` as `(offset, payload)`.
pub fn records(header: BatchHeader, batch: Bytes) -> impl Iterator<Item = (u64, Bytes)> {
    let mut pos = BATCH_HEADER_BYTES;
    (0..header.record_count).map(move |i| {
        let len = u32::from_le_bytes(batch[pos..pos + 4].try_into().expect("verified")) as usize;
        let start = pos + RECORD_HEADER_BYTES;
        pos = start + len;
        (header.base_offset + u64::from(i), batch.slice(start..start + len))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_seal_verify_roundtrip() {
        let mut buf = Vec::new();
        encode(&[b"a".as_slice(), b"", b"hello"], &mut buf);
        seal(&mut buf, 42, 1_700_000_000_000);
        let h = BatchHeader::parse(&buf);
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.record_count, 3);
        assert_eq!(h.batch_len as usize, buf.len());
        assert_eq!(buf.len() as u64, batch_len_for(3, 6));
        h.check_frame(buf.len() as u64).unwrap();
        verify(&h, &buf).unwrap();
        let recs: Vec<_> = records(h, Bytes::from(buf.clone())).collect();
        assert_eq!(recs[0], (42, Bytes::from_static(b"a")));
        assert_eq!(recs[1], (43, Bytes::new()));
        assert_eq!(recs[2], (44, Bytes::from_static(b"hello")));
    }

    #[test]
    fn any_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode(&[b"payload-one".as_slice(), b"payload-two"], &mut buf);
        seal(&mut buf, 7, 99);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                let h = BatchHeader::parse(&bad);
                let ok = h.check_frame(bad.len() as u64).is_ok()
                    && h.batch_len as usize == bad.len()
                    && verify(&h, &bad).is_ok();
                assert!(!ok, "flip of bit {bit} in byte {byte} went unnoticed");
            }
        }
    }
}
