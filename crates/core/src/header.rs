//! The versioned region header, byte by byte as `docs/FORMAT.md` describes it.
//!
//! Parsing is a pure function of bytes so it can be tested on arbitrary input: any byte string
//! yields either a valid [`Header`] or a reason, never a panic.

/// The first 8 bytes of every region: ASCII `NUMBALOC`. Written last when a region is created.
pub const MAGIC: [u8; 8] = *b"NUMBALOC";
/// [`MAGIC`] read as the little-endian `u64` that is stored and loaded atomically.
pub const MAGIC_WORD: u64 = u64::from_le_bytes(MAGIC);
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 4;
/// The header's length in bytes: two cache lines, so the bitmap starts on a line of its own.
pub const HEADER_LEN: usize = 128;
/// Offset of the application tag: what the numbers stand for, written at creation and compared
/// by openers that ask for one (a port pool stores its port range there).
pub const TAG_OFFSET: usize = 112;
/// Offset of the cyclic policy's shared cursor: the header's one mutable field, alone with
/// fields that are only read when a region is opened, so it shares a cache line with no hot data.
pub const CURSOR_OFFSET: usize = 120;
/// Alignment of each section: a cache line, so no two sections share one.
const SECTION_ALIGN: u64 = 64;
/// The largest bitmap size in bytes a region may have (1 TiB, 2^43 numbers: every number stays
/// exactly representable as a JavaScript number).
pub const MAX_SIZE: u64 = 1 << 40;

/// Flag: the region keeps a holder record per number.
const FLAG_HOLDERS: u32 = 1;

/// The fields of a valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bitmap size in bytes as requested at creation (Go's `size`).
    pub size: u64,
    /// Whether the region records who holds each number (fixed at creation).
    pub holders: bool,
    /// What the numbers stand for, set by the creator (0: nothing said). Never interpreted by
    /// the allocator; an opener that asks for a tag must find the same one.
    pub tag: u64,
}

impl Header {
    /// A header for a bitmap of `size` bytes, with or without holder records. `size` must be in
    /// `1..=MAX_SIZE`.
    pub fn new(size: u64, holders: bool) -> Header {
        debug_assert!((1..=MAX_SIZE).contains(&size));
        Header {
            size,
            holders,
            tag: 0,
        }
    }

    /// The same header with an application tag.
    pub fn with_tag(self, tag: u64) -> Header {
        Header { tag, ..self }
    }

    /// Offset of the holder records: one `u64` per number (see [`crate::Holder`]).
    pub fn holders_offset(&self) -> u64 {
        (self.l2_offset() + self.l2_words() as u64 * 8).next_multiple_of(SECTION_ALIGN)
    }

    /// Length of the holder records in bytes: 8 per number, or 0 without holders.
    pub fn holders_len(&self) -> u64 {
        if self.holders {
            self.capacity() * 8
        } else {
            0
        }
    }

    /// How many numbers the region holds: 8 per byte of bitmap.
    pub fn capacity(&self) -> u64 {
        self.size * 8
    }

    /// Bitmap length in bytes: `size` rounded up to whole 64-bit words.
    pub fn bitmap_len(&self) -> u64 {
        self.size.div_ceil(8) * 8
    }

    /// How many 64-bit words the bitmap has.
    pub fn words(&self) -> usize {
        (self.bitmap_len() / 8) as usize
    }

    /// Words of the first summary level: one bit per bitmap word ("that word is full").
    pub fn l1_words(&self) -> usize {
        self.words().div_ceil(64)
    }

    /// Words of the second summary level: one bit per first-level word ("all 64 are full").
    pub fn l2_words(&self) -> usize {
        self.l1_words().div_ceil(64)
    }

    /// Offset of the first summary level.
    pub fn l1_offset(&self) -> u64 {
        (HEADER_LEN as u64 + self.bitmap_len()).next_multiple_of(SECTION_ALIGN)
    }

    /// Offset of the second summary level.
    pub fn l2_offset(&self) -> u64 {
        (self.l1_offset() + self.l1_words() as u64 * 8).next_multiple_of(SECTION_ALIGN)
    }

    /// Each section's (offset in bytes, length in 64-bit words): bitmap, summary level 1,
    /// summary level 2, holder records (0 words without holders).
    pub fn sections(&self) -> [(usize, usize); 4] {
        [
            (HEADER_LEN, self.words()),
            (self.l1_offset() as usize, self.l1_words()),
            (self.l2_offset() as usize, self.l2_words()),
            (
                self.holders_offset() as usize,
                (self.holders_len() / 8) as usize,
            ),
        ]
    }

    /// Total length of the region in bytes: header, bitmap, summary levels, holder records.
    pub fn region_len(&self) -> u64 {
        if self.holders {
            self.holders_offset() + self.holders_len()
        } else {
            self.l2_offset() + self.l2_words() as u64 * 8
        }
    }

    /// The header's bytes, magic included.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.size.to_le_bytes());
        b[24..32].copy_from_slice(&self.capacity().to_le_bytes());
        b[32..40].copy_from_slice(&(HEADER_LEN as u64).to_le_bytes());
        b[40..48].copy_from_slice(&self.bitmap_len().to_le_bytes());
        b[48..56].copy_from_slice(&self.region_len().to_le_bytes());
        b[56..64].copy_from_slice(&self.l1_offset().to_le_bytes());
        b[64..72].copy_from_slice(&(self.l1_words() as u64 * 8).to_le_bytes());
        b[72..80].copy_from_slice(&self.l2_offset().to_le_bytes());
        b[80..88].copy_from_slice(&(self.l2_words() as u64 * 8).to_le_bytes());
        let flags = if self.holders { FLAG_HOLDERS } else { 0 };
        b[88..92].copy_from_slice(&flags.to_le_bytes());
        if self.holders {
            b[96..104].copy_from_slice(&self.holders_offset().to_le_bytes());
            b[104..112].copy_from_slice(&self.holders_len().to_le_bytes());
        }
        b[TAG_OFFSET..TAG_OFFSET + 8].copy_from_slice(&self.tag.to_le_bytes());
        b
    }

    /// Parses and cross-checks a header. Every field must agree with the others; anything else is
    /// a reason for `ERR_INCOMPATIBLE_REGION`.
    pub fn parse(bytes: &[u8]) -> Result<Header, String> {
        if bytes.len() < HEADER_LEN {
            return Err(format!(
                "{} bytes long, shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            ));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        if bytes[0..8] != MAGIC {
            return Err("no numballoc magic number at offset 0".into());
        }
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(format!(
                "format version {version}, this build reads version {FORMAT_VERSION}"
            ));
        }
        let header_len = u32_at(12);
        if header_len as usize != HEADER_LEN {
            return Err(format!("header length {header_len}, expected {HEADER_LEN}"));
        }
        let size = u64_at(16);
        if !(1..=MAX_SIZE).contains(&size) {
            return Err(format!("size {size} outside 1..={MAX_SIZE}"));
        }
        let flags = u32_at(88);
        if flags & !FLAG_HOLDERS != 0 {
            return Err(format!("unknown flags {flags:#x}"));
        }
        let header = Header {
            size,
            holders: flags & FLAG_HOLDERS != 0,
            tag: u64_at(TAG_OFFSET),
        };
        let (holders_offset, holders_len) = if header.holders {
            (header.holders_offset(), header.holders_len())
        } else {
            (0, 0)
        };
        let checks = [
            ("capacity", 24, header.capacity()),
            ("bitmap offset", 32, HEADER_LEN as u64),
            ("bitmap length", 40, header.bitmap_len()),
            ("region length", 48, header.region_len()),
            ("summary level 1 offset", 56, header.l1_offset()),
            ("summary level 1 length", 64, header.l1_words() as u64 * 8),
            ("summary level 2 offset", 72, header.l2_offset()),
            ("summary level 2 length", 80, header.l2_words() as u64 * 8),
            ("holders offset", 96, holders_offset),
            ("holders length", 104, holders_len),
        ];
        // Bytes 112..120 are the tag (any value) and 120..128 the cyclic cursor, which changes
        // while the region is in use.
        if bytes[92..96].iter().any(|&b| b != 0) {
            return Err("corrupt header: reserved bytes 92..96 are not zero".into());
        }
        for (field, at, expected) in checks {
            let found = u64_at(at);
            if found != expected {
                return Err(format!(
                    "corrupt header: {field} is {found}, expected {expected}"
                ));
            }
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips() {
        for (size, holders) in [1, 7, 8, 9, 256, 1 << 20, MAX_SIZE]
            .into_iter()
            .flat_map(|size| [(size, false), (size, true)])
        {
            let h = Header::new(size, holders).with_tag(size ^ 0xdead_beef_0000_0000);
            assert_eq!(Header::parse(&h.encode()), Ok(h));
            assert_eq!(h.region_len() % 8, 0);
            assert!(h.bitmap_len() >= size && h.bitmap_len() < size + 8);
        }
    }

    #[test]
    fn summary_overhead_is_under_two_percent_and_sections_do_not_overlap() {
        for size in [1u64, 8, 100, 256, 1 << 17, 1 << 21, 1 << 24, MAX_SIZE] {
            let h = Header::new(size, true);
            assert!(h.holders_offset() >= h.l2_offset() + h.l2_words() as u64 * 8);
            assert_eq!(h.holders_offset() % 64, 0);
            assert_eq!(h.region_len(), h.holders_offset() + size * 64);
            let h = Header::new(size, false);
            assert!(h.l1_offset() >= HEADER_LEN as u64 + h.bitmap_len());
            assert!(h.l2_offset() >= h.l1_offset() + h.l1_words() as u64 * 8);
            assert_eq!(h.l1_offset() % 64, 0);
            assert_eq!(h.l2_offset() % 64, 0);
            let summary = h.region_len() - HEADER_LEN as u64 - h.bitmap_len();
            if size >= 1 << 14 {
                assert!(
                    summary * 50 <= h.bitmap_len(),
                    "size {size}: {summary} bytes"
                );
            } else {
                assert!(summary <= 192, "size {size}: {summary} bytes");
            }
        }
    }

    #[test]
    fn rejects_each_corrupt_field() {
        let good = Header::new(100, true).encode();
        for at in 0..TAG_OFFSET {
            let mut bad = good;
            bad[at] ^= 0x40;
            assert!(
                Header::parse(&bad).is_err(),
                "flipping byte {at} went unnoticed"
            );
        }
    }

    #[test]
    fn rejects_other_versions_and_short_input() {
        let mut b = Header::new(8, true).encode();
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(Header::parse(&b).unwrap_err().contains("version 2"));
        assert!(Header::parse(&b[..HEADER_LEN - 1]).is_err());
        assert!(Header::parse(&[]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Header::parse(&bytes);
        }

        #[test]
        fn random_bytes_after_a_valid_magic_never_panic(
            rest in proptest::collection::vec(any::<u8>(), 120..200)
        ) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend(rest);
            if let Ok(h) = Header::parse(&bytes) {
                prop_assert_eq!(&h.encode()[..], &bytes[..HEADER_LEN]);
            }
        }
    }
}
