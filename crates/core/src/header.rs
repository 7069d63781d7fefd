//! The versioned region header, byte by byte as `docs/FORMAT.md` describes it.
//!
//! Parsing is a pure function of bytes so it can be tested on arbitrary input: any byte string
//! yields either a valid [`Header`] or a reason, never a panic.

/// The first 8 bytes of every region: ASCII `NUMBALOC`. Written last when a region is created.
pub const MAGIC: [u8; 8] = *b"NUMBALOC";
/// [`MAGIC`] read as the little-endian `u64` that is stored and loaded atomically.
pub const MAGIC_WORD: u64 = u64::from_le_bytes(MAGIC);
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 8;
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

/// Where the six (offset, length) pairs of section fields start in the header.
const SECTION_FIELDS: [usize; 6] = [48, 64, 80, 96, 112, 136];

/// Where the section after `s` starts: the next cache line.
fn next_section(s: Section) -> u64 {
    (s.offset + s.len).next_multiple_of(SECTION_ALIGN)
}

/// Flag: the region keeps a holder table and a holder record per number.
const FLAG_HOLDERS: u32 = 1;

/// What kind of allocator a region holds: each kind lays out its own sections after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`crate::ConcurrentBitmap`]: a bitmap with two summary levels.
    Bitmap,
    /// [`crate::ConcurrentQueue`]: a state word per number and a ring (see [`crate::queue`]).
    Queue,
}

impl Kind {
    /// The value stored in the header.
    pub fn code(self) -> u32 {
        match self {
            Kind::Bitmap => 1,
            Kind::Queue => 2,
        }
    }

    /// The kind a header value names, if this build knows it.
    pub fn from_code(code: u32) -> Option<Kind> {
        match code {
            1 => Some(Kind::Bitmap),
            2 => Some(Kind::Queue),
            _ => None,
        }
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bitmap => "bitmap",
            Kind::Queue => "queue",
        }
    }
}

/// The fields of a valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The allocator kind.
    pub kind: Kind,
    /// A bitmap's size in bytes as requested at creation (Go's `size`); a queue's capacity.
    pub size: u64,
    /// How many numbers the region was created for: for a bitmap `1..=size * 8` (the whole
    /// bitmap unless the creator asked for fewer), for a queue `size`.
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

/// The sections of a queue region, in file order (see [`crate::queue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSections {
    /// The head counter, the settled count and the passed count, then the tail counter a cache
    /// line later (dequeuers and enqueuers write different lines).
    pub control: Section,
    /// A state word per number.
    pub states: Section,
    /// The ring of [`crate::queue::Queue::ring_len`] slots.
    pub ring: Section,
    /// The holder slot table, as in a bitmap region; empty without holders.
    pub slots: Section,
}

/// Where a region's sections are: each kind lays out its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Bitmap(Sections),
    Queue(QueueSections),
}

impl Layout {
    /// The holder slot table (empty without holders): at the same header field for every kind.
    pub fn slots(&self) -> Section {
        match self {
            Layout::Bitmap(s) => s.slots,
            Layout::Queue(s) => s.slots,
        }
    }
}

/// The largest queue capacity (see [`crate::queue::MAX_CAPACITY`]).
pub const MAX_QUEUE_CAPACITY: u64 = crate::queue::MAX_CAPACITY;
/// Bytes of a queue's control section: head (with the settled and passed counts) and tail, a
/// cache line each.
const CONTROL_LEN: u64 = 2 * SECTION_ALIGN;

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

    /// A queue header for `capacity` numbers (`1..=MAX_QUEUE_CAPACITY`), with or without holder
    /// slots.
    pub fn queue(capacity: u64, holders: bool) -> Header {
        debug_assert!((1..=MAX_QUEUE_CAPACITY).contains(&capacity));
        Header {
            kind: Kind::Queue,
            size: capacity,
            capacity,
            holders,
            tag: 0,
        }
    }

    /// The same header with an application tag.
    pub fn with_tag(self, tag: u64) -> Header {
        Header { tag, ..self }
    }

    /// The same bitmap header for `capacity` numbers (`1..=size * 8`).
    pub fn with_capacity(self, capacity: u64) -> Header {
        debug_assert!(
            self.kind == Kind::Bitmap && (1..=self.bitmap_capacity()).contains(&capacity)
        );
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

    /// Every section of this header's kind, each starting on a cache line after the one before.
    pub fn layout(&self) -> Layout {
        match self.kind {
            Kind::Bitmap => Layout::Bitmap(self.sections()),
            Kind::Queue => Layout::Queue(self.queue_sections()),
        }
    }

    /// The holder slot table, where the slots are for every kind.
    fn holder_slots(&self, after: Section) -> Section {
        if self.holders {
            Section {
                offset: next_section(after),
                len: crate::holder::SLOTS as u64 * SLOT_ENTRY_LEN,
            }
        } else {
            Section { offset: 0, len: 0 }
        }
    }

    fn queue_sections(&self) -> QueueSections {
        let control = Section {
            offset: HEADER_LEN as u64,
            len: CONTROL_LEN,
        };
        let states = Section {
            offset: next_section(control),
            len: self.capacity * 8,
        };
        let ring = Section {
            offset: next_section(states),
            len: crate::queue::Queue::ring_len(self.capacity) as u64 * 8,
        };
        QueueSections {
            control,
            states,
            ring,
            slots: self.holder_slots(ring),
        }
    }

    /// The sections of a bitmap region.
    pub fn sections(&self) -> Sections {
        let after = next_section;
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
            let slots = self.holder_slots(counts);
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
        let end = |s: Section| s.offset + s.len;
        match self.layout() {
            Layout::Bitmap(s) if self.holders => end(s.records),
            Layout::Bitmap(s) => end(s.counts),
            Layout::Queue(s) if self.holders => end(s.slots),
            Layout::Queue(s) => end(s.ring),
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
        for (_, at, value) in self.section_fields() {
            put(at, &value.to_le_bytes());
        }
        put(TAG_OFFSET, &self.tag.to_le_bytes());
        b
    }

    /// The section fields at offsets 48..128 and 136..152: (name, offset in the header, value).
    /// The holder slots are at 96 and 104 for every kind; fields a kind does not use are zero.
    fn section_fields(&self) -> Vec<(String, usize, u64)> {
        let none = Section { offset: 0, len: 0 };
        let (names, sections) = match self.layout() {
            Layout::Bitmap(s) => (
                [
                    "bitmap",
                    "summary level 1",
                    "summary level 2",
                    "holder slots",
                    "holder records",
                    "full counts",
                ],
                [s.bitmap, s.l1, s.l2, s.slots, s.records, s.counts],
            ),
            Layout::Queue(q) => (
                [
                    "control",
                    "states",
                    "ring",
                    "holder slots",
                    "unused",
                    "unused",
                ],
                [q.control, q.states, q.ring, q.slots, none, none],
            ),
        };
        let mut fields = Vec::with_capacity(12);
        for ((name, section), at) in names.into_iter().zip(sections).zip(SECTION_FIELDS) {
            fields.push((format!("{name} offset"), at, section.offset));
            fields.push((format!("{name} length"), at + 8, section.len));
        }
        fields
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
        let capacity = u64_at(32);
        match kind {
            Kind::Bitmap => {
                if !(1..=MAX_SIZE).contains(&size) {
                    return Err(format!("size {size} outside 1..={MAX_SIZE}"));
                }
                if !(1..=size * 8).contains(&capacity) {
                    return Err(format!(
                        "corrupt header: capacity {capacity} outside 1..={}",
                        size * 8
                    ));
                }
            }
            Kind::Queue => {
                if !(1..=MAX_QUEUE_CAPACITY).contains(&capacity) || size != capacity {
                    return Err(format!(
                        "corrupt header: a queue of capacity {capacity} (size {size}), outside 1..={MAX_QUEUE_CAPACITY} or unequal"
                    ));
                }
            }
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
        let mut checks = vec![("region length".to_owned(), 40, header.region_len())];
        checks.extend(header.section_fields());
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
    fn queue_headers_round_trip_lay_out_their_own_sections_and_refuse_each_corrupt_field() {
        for (capacity, holders) in [1, 2, 3, 1000, 1 << 20, MAX_QUEUE_CAPACITY]
            .into_iter()
            .flat_map(|c| [(c, false), (c, true)])
        {
            let h = Header::queue(capacity, holders).with_tag(capacity ^ 0x5a);
            assert_eq!(Header::parse(&h.encode()), Ok(h));
            let Layout::Queue(q) = h.layout() else {
                panic!("a queue header lays out a queue");
            };
            let ring = crate::queue::Queue::ring_len(capacity) as u64;
            assert_eq!((q.states.len, q.ring.len), (8 * capacity, 8 * ring));
            assert!(ring.is_power_of_two() && ring >= 2 * capacity);
            let order = [q.control, q.states, q.ring];
            for pair in order.windows(2) {
                assert!(pair[1].offset >= pair[0].offset + pair[0].len);
                assert_eq!(pair[1].offset % 64, 0);
            }
            assert_eq!(q.slots.len, if holders { 8 * 4096 } else { 0 });
            assert_eq!(h.layout().slots(), q.slots);
            assert_eq!(h.region_len() % 8, 0);
        }
        let good = Header::queue(100, true).encode();
        for at in (0..TAG_OFFSET).chain(TAG_OFFSET + 8..CURSOR_OFFSET) {
            let mut bad = good;
            bad[at] ^= 0x40;
            assert!(
                Header::parse(&bad).is_err(),
                "flipping byte {at} of a queue header went unnoticed"
            );
        }
        let mut too_big = Header::queue(8, false).encode();
        too_big[24..32].copy_from_slice(&(MAX_QUEUE_CAPACITY + 1).to_le_bytes());
        too_big[32..40].copy_from_slice(&(MAX_QUEUE_CAPACITY + 1).to_le_bytes());
        assert!(Header::parse(&too_big).unwrap_err().contains("queue"));
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
