//! The versioned region header, byte by byte as `docs/FORMAT.md` describes it.
//!
//! Parsing is a pure function of bytes so it can be tested on arbitrary input: any byte string
//! yields either a valid [`Header`] or a reason, never a panic.

/// The first 8 bytes of every region: ASCII `NUMBALOC`. Written last when a region is created.
pub const MAGIC: [u8; 8] = *b"NUMBALOC";
/// [`MAGIC`] read as the little-endian `u64` that is stored and loaded atomically.
pub const MAGIC_WORD: u64 = u64::from_le_bytes(MAGIC);
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 6;
/// The header's length in bytes: three cache lines, so the bitmap starts on a line of its own.
pub const HEADER_LEN: usize = 192;
/// Offset of the application tag: what the numbers stand for, written at creation and compared
/// by openers that ask for one (a port pool stores its port range there).
pub const TAG_OFFSET: usize = 128;
/// Offset of the bytes reserved for later versions (zero), up to the cursor.
const RESERVED_OFFSET: usize = 152;
/// Offset of the cyclic policy's shared cursor: the header's one mutable field, on the header's
/// last cache line with fields that are only read when a region is opened.
pub const CURSOR_OFFSET: usize = 184;
/// Alignment of each section: a cache line, so no two sections share one.
const SECTION_ALIGN: u64 = 64;
/// The largest bitmap size in bytes a region may have (1 TiB, 2^43 numbers: every number stays
/// exactly representable as a JavaScript number).
pub const MAX_SIZE: u64 = 1 << 40;
/// Bytes of one holder record (see [`crate::holder`]).
const RECORD_LEN: u64 = 4;
/// Bytes of one holder slot entry.
const SLOT_ENTRY_LEN: u64 = 8;

/// Flag: the region keeps a holder table and a holder record per number.
const FLAG_HOLDERS: u32 = 1;

/// What kind of allocator a region holds: each kind lays out its own sections after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`crate::ConcurrentBitmap`]: a bitmap with two summary levels.
    Bitmap,
}

impl Kind {
    /// The value stored in the header.
    pub fn code(self) -> u32 {
        match self {
            Kind::Bitmap => 1,
        }
    }

    /// The kind a header value names, if this build knows it.
    pub fn from_code(code: u32) -> Option<Kind> {
        match code {
            1 => Some(Kind::Bitmap),
            _ => None,
        }
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bitmap => "bitmap",
        }
    }
}

/// The fields of a valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The allocator kind.
    pub kind: Kind,
    /// Bitmap size in bytes as requested at creation (Go's `size`).
    pub size: u64,
    /// How many numbers the region was created for: `1..=size * 8` (the whole bitmap unless the
    /// creator asked for fewer).
    pub capacity: u64,
    /// Whether the region records who holds each number (fixed at creation).
    pub holders: bool,
    /// What the numbers stand for, set by the creator (0: nothing said). Never interpreted by
    /// the allocator; an opener that asks for a tag must find the same one.
    pub tag: u64,
}

/// A section of the region: where it starts and how many bytes it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub offset: u64,
    pub len: u64,
}

/// The sections of a bitmap region, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sections {
    pub bitmap: Section,
    pub l1: Section,
    pub l2: Section,
    /// A 4-byte count per level-1 word: how many of the 64 bitmap words it covers are full, at
    /// most (see `bits.rs`, "Full counts").
    pub counts: Section,
    /// The holder slot table ([`crate::holder::SLOTS`] entries of 8 bytes); empty without holders.
    pub slots: Section,
    /// A 4-byte holder record per number of the bitmap; empty without holders.
    pub records: Section,
}

impl Header {
    /// A bitmap header for `size` bytes (`size * 8` numbers), with or without holder records.
    /// `size` must be in `1..=MAX_SIZE`.
    pub fn new(size: u64, holders: bool) -> Header {
        debug_assert!((1..=MAX_SIZE).contains(&size));
        Header {
            kind: Kind::Bitmap,
            size,
            capacity: size * 8,
            holders,
            tag: 0,
        }
    }

    /// The same header with an application tag.
    pub fn with_tag(self, tag: u64) -> Header {
        Header { tag, ..self }
    }

    /// The same header for `capacity` numbers (`1..=size * 8`).
    pub fn with_capacity(self, capacity: u64) -> Header {
        debug_assert!((1..=self.bitmap_capacity()).contains(&capacity));
        Header { capacity, ..self }
    }

    /// How many numbers the bitmap has room for: 8 per byte.
    pub fn bitmap_capacity(&self) -> u64 {
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

    /// Every section, each starting on a cache line after the one before.
    pub fn sections(&self) -> Sections {
        let after = |s: Section| (s.offset + s.len).next_multiple_of(SECTION_ALIGN);
        let bitmap = Section {
            offset: HEADER_LEN as u64,
            len: self.bitmap_len(),
        };
        let l1 = Section {
            offset: after(bitmap),
            len: self.l1_words() as u64 * 8,
        };
        let l2 = Section {
            offset: after(l1),
            len: self.l2_words() as u64 * 8,
        };
        let counts = Section {
            offset: after(l2),
            // Whole 8-byte words, so every section and the region stay a multiple of 8 long.
            len: (self.l1_words() as u64 * 4).next_multiple_of(8),
        };
        let (slots, records) = if self.holders {
            let slots = Section {
                offset: after(counts),
                len: crate::holder::SLOTS as u64 * SLOT_ENTRY_LEN,
            };
            let records = Section {
                offset: after(slots),
                len: self.bitmap_capacity() * RECORD_LEN,
            };
            (slots, records)
        } else {
            let none = Section { offset: 0, len: 0 };
            (none, none)
        };
        Sections {
            bitmap,
            l1,
            l2,
            counts,
            slots,
            records,
        }
    }

    /// Total length of the region in bytes: the end of its last section.
    pub fn region_len(&self) -> u64 {
        let s = self.sections();
        if self.holders {
            s.records.offset + s.records.len
        } else {
            s.counts.offset + s.counts.len
        }
    }

    /// The header's bytes, magic included.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &MAGIC);
        put(8, &FORMAT_VERSION.to_le_bytes());
        put(12, &(HEADER_LEN as u32).to_le_bytes());
        put(16, &self.kind.code().to_le_bytes());
        let flags = if self.holders { FLAG_HOLDERS } else { 0 };
        put(20, &flags.to_le_bytes());
        put(24, &self.size.to_le_bytes());
        put(32, &self.capacity.to_le_bytes());
        put(40, &self.region_len().to_le_bytes());
        for (at, value) in self.section_fields() {
            put(at, &value.to_le_bytes());
        }
        put(TAG_OFFSET, &self.tag.to_le_bytes());
        b
    }

    /// The section fields at offsets 48..128 and 136..152: (offset in the header, value).
    fn section_fields(&self) -> [(usize, u64); 12] {
        let s = self.sections();
        [
            (48, s.bitmap.offset),
            (56, s.bitmap.len),
            (64, s.l1.offset),
            (72, s.l1.len),
            (80, s.l2.offset),
            (88, s.l2.len),
            (96, s.slots.offset),
            (104, s.slots.len),
            (112, s.records.offset),
            (120, s.records.len),
            (136, s.counts.offset),
            (144, s.counts.len),
        ]
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
        let kind = Kind::from_code(u32_at(16))
            .ok_or_else(|| format!("unknown allocator kind {}", u32_at(16)))?;
        let flags = u32_at(20);
        if flags & !FLAG_HOLDERS != 0 {
            return Err(format!("unknown flags {flags:#x}"));
        }
        let size = u64_at(24);
        if !(1..=MAX_SIZE).contains(&size) {
            return Err(format!("size {size} outside 1..={MAX_SIZE}"));
        }
        let capacity = u64_at(32);
        if !(1..=size * 8).contains(&capacity) {
            return Err(format!(
                "corrupt header: capacity {capacity} outside 1..={}",
                size * 8
            ));
        }
        let header = Header {
            kind,
            size,
            capacity,
            holders: flags & FLAG_HOLDERS != 0,
            tag: u64_at(TAG_OFFSET),
        };
        if bytes[RESERVED_OFFSET..CURSOR_OFFSET]
            .iter()
            .any(|&b| b != 0)
        {
            return Err(format!(
                "corrupt header: reserved bytes {RESERVED_OFFSET}..{CURSOR_OFFSET} are not zero"
            ));
        }
        let mut checks = vec![("region length", 40, header.region_len())];
        let names = [
            "bitmap offset",
            "bitmap length",
            "summary level 1 offset",
            "summary level 1 length",
            "summary level 2 offset",
            "summary level 2 length",
            "holder slots offset",
            "holder slots length",
            "holder records offset",
            "holder records length",
            "full counts offset",
            "full counts length",
        ];
        for (name, (at, expected)) in names.into_iter().zip(header.section_fields()) {
            checks.push((name, at, expected));
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
            let h = Header::new(size, holders)
                .with_tag(size ^ 0xdead_beef_0000_0000)
                .with_capacity(size * 8 - size / 2);
            assert_eq!(Header::parse(&h.encode()), Ok(h));
            assert_eq!(h.region_len() % 8, 0);
            assert!(h.bitmap_len() >= size && h.bitmap_len() < size + 8);
        }
    }

    #[test]
    fn summary_overhead_is_under_two_and_a_half_percent_and_sections_do_not_overlap() {
        for size in [1u64, 8, 100, 256, 1 << 17, 1 << 21, 1 << 24, MAX_SIZE] {
            let h = Header::new(size, true);
            let s = h.sections();
            let order = [s.bitmap, s.l1, s.l2, s.counts, s.slots, s.records];
            for pair in order.windows(2) {
                assert!(pair[1].offset >= pair[0].offset + pair[0].len);
                assert_eq!(pair[1].offset % 64, 0);
            }
            assert_eq!(s.bitmap.offset, HEADER_LEN as u64);
            assert_eq!(h.region_len(), s.records.offset + size * 8 * 4);
            let h = Header::new(size, false);
            let s = h.sections();
            assert_eq!(h.region_len(), s.counts.offset + s.counts.len);
            let summary = h.region_len() - HEADER_LEN as u64 - h.bitmap_len();
            if size >= 1 << 14 {
                assert!(
                    summary * 40 <= h.bitmap_len(),
                    "size {size}: {summary} bytes"
                );
            } else {
                assert!(summary <= 256, "size {size}: {summary} bytes");
            }
        }
    }

    #[test]
    fn rejects_each_corrupt_field() {
        let good = Header::new(100, true).encode();
        for at in (0..TAG_OFFSET).chain(TAG_OFFSET + 8..CURSOR_OFFSET) {
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
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..260)) {
            let _ = Header::parse(&bytes);
        }

        #[test]
        fn random_bytes_after_a_valid_magic_never_panic(
            rest in proptest::collection::vec(any::<u8>(), 184..260)
        ) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend(rest);
            if let Ok(h) = Header::parse(&bytes) {
                prop_assert_eq!(&h.encode()[..], &bytes[..HEADER_LEN]);
            }
        }
    }
}
