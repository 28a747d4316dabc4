//! HPACK (RFC 7541), as much as a gRPC client needs: requests are encoded
//! with literals that never touch the dynamic table (no state, no Huffman),
//! responses are decoded in full (static and dynamic table, Huffman), as
//! otpd's HTTP/2 server (h2) compresses its headers.
//!
//! Everything here reads bytes from the peer and is bounded: integers that
//! overflow, strings longer than their block, indexes out of the tables, a
//! table size above what this client announced and more than
//! [`MAX_HEADER_LIST`] bytes of decoded headers are errors, never panics.

use std::collections::VecDeque;

/// The dynamic table size this client allows (HTTP/2's default for
/// SETTINGS_HEADER_TABLE_SIZE, which it never changes).
pub const TABLE_SIZE: usize = 4096;
/// Most decoded bytes (names and values) in one header block.
pub const MAX_HEADER_LIST: usize = 16 * 1024;

/// Why a header block did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// It ends inside a field.
    Truncated,
    /// An integer does not fit.
    Overflow,
    /// An index that no table holds.
    BadIndex,
    /// A Huffman string that is not valid (EOS inside, bad padding).
    BadHuffman,
    /// A dynamic table size update above [`TABLE_SIZE`], or one that is
    /// not at the start of a block.
    BadTableSize,
    /// The decoded headers exceed [`MAX_HEADER_LIST`].
    TooLarge,
}

/// The static table (RFC 7541, Appendix A), index 1 first.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// A decoded header field: (name, value).
pub type Field = (Vec<u8>, Vec<u8>);

/// Static table indexes the encoder uses.
pub mod index {
    /// `:authority` (name only).
    pub const AUTHORITY: usize = 1;
    /// `:method: POST`.
    pub const METHOD_POST: usize = 3;
    /// `:path` (name only).
    pub const PATH: usize = 4;
    /// `:scheme: http`.
    pub const SCHEME_HTTP: usize = 6;
    /// `content-type` (name only).
    pub const CONTENT_TYPE: usize = 31;
    /// `user-agent` (name only).
    pub const USER_AGENT: usize = 58;
}

/// Appends `value` as an HPACK integer with an `n`-bit prefix, the prefix's
/// other bits set to `flags`.
fn encode_int(out: &mut Vec<u8>, flags: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn encode_str(out: &mut Vec<u8>, s: &[u8]) {
    encode_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// Appends a fully indexed field (static table).
pub fn indexed(out: &mut Vec<u8>, index: usize) {
    encode_int(out, 0x80, 7, index);
}

/// Appends a literal field without indexing whose name is static entry
/// `name_index`.
pub fn literal_indexed_name(out: &mut Vec<u8>, name_index: usize, value: &[u8]) {
    encode_int(out, 0, 4, name_index);
    encode_str(out, value);
}

/// Appends a literal field without indexing with a literal name.
pub fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    encode_str(out, name);
    encode_str(out, value);
}

/// The decoding context of one connection.
#[derive(Debug)]
pub struct Decoder {
    /// Newest first.
    table: VecDeque<Field>,
    size: usize,
    max_size: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max_size: TABLE_SIZE,
        }
    }
}

fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

/// Reads an HPACK integer with an `n`-bit prefix from `b[*pos..]`.
fn decode_int(b: &[u8], pos: &mut usize, n: u32) -> Result<usize, DecodeError> {
    let first = *b.get(*pos).ok_or(DecodeError::Truncated)?;
    *pos += 1;
    let max = (1usize << n) - 1;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let byte = *b.get(*pos).ok_or(DecodeError::Truncated)?;
        *pos += 1;
        // Nothing here needs more than 2^28: refuse longer encodings.
        if shift > 21 {
            return Err(DecodeError::Overflow);
        }
        value = value
            .checked_add(usize::from(byte & 0x7f) << shift)
            .ok_or(DecodeError::Overflow)?;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

/// Reads a string literal (Huffman or raw).
fn decode_str(b: &[u8], pos: &mut usize) -> Result<Vec<u8>, DecodeError> {
    let huffman = b.get(*pos).ok_or(DecodeError::Truncated)? & 0x80 != 0;
    let len = decode_int(b, pos, 7)?;
    let end = pos.checked_add(len).ok_or(DecodeError::Overflow)?;
    let raw = b.get(*pos..end).ok_or(DecodeError::Truncated)?;
    *pos = end;
    if huffman {
        huffman_decode(raw)
    } else {
        Ok(raw.to_vec())
    }
}

impl Decoder {
    fn get(&self, index: usize) -> Result<(&[u8], &[u8]), DecodeError> {
        match index {
            0 => Err(DecodeError::BadIndex),
            i if i <= STATIC.len() => {
                let (n, v) = STATIC[i - 1];
                Ok((n.as_bytes(), v.as_bytes()))
            }
            i => self
                .table
                .get(i - STATIC.len() - 1)
                .map(|(n, v)| (n.as_slice(), v.as_slice()))
                .ok_or(DecodeError::BadIndex),
        }
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= entry_size(&n, &v),
                None => self.size = 0,
            }
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = entry_size(&name, &value);
        if size > self.max_size {
            // RFC 7541, 4.4: an entry larger than the table empties it.
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.table.push_front((name, value));
    }

    /// Decodes one complete header block into (name, value) pairs.
    ///
    /// # Errors
    /// A block that is not valid HPACK, or too large (see [`DecodeError`]).
    /// After an error the connection must not be used again (its table is
    /// out of step with the peer's).
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, DecodeError> {
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut pos = 0;
        let mut fields_seen = false;
        while pos < block.len() {
            let b = block[pos];
            let (name, value) = if b & 0x80 != 0 {
                let i = decode_int(block, &mut pos, 7)?;
                let (n, v) = self.get(i)?;
                (n.to_vec(), v.to_vec())
            } else if b & 0xc0 == 0x40 {
                let i = decode_int(block, &mut pos, 6)?;
                let name = match i {
                    0 => decode_str(block, &mut pos)?,
                    i => self.get(i)?.0.to_vec(),
                };
                let value = decode_str(block, &mut pos)?;
                self.insert(name.clone(), value.clone());
                (name, value)
            } else if b & 0xe0 == 0x20 {
                // A size update must come before the block's first field.
                let size = decode_int(block, &mut pos, 5)?;
                if fields_seen || size > TABLE_SIZE {
                    return Err(DecodeError::BadTableSize);
                }
                self.max_size = size;
                self.evict_to(size);
                continue;
            } else {
                // Without indexing (0000) or never indexed (0001).
                let i = decode_int(block, &mut pos, 4)?;
                let name = match i {
                    0 => decode_str(block, &mut pos)?,
                    i => self.get(i)?.0.to_vec(),
                };
                (name, decode_str(block, &mut pos)?)
            };
            fields_seen = true;
            total = total.saturating_add(name.len()).saturating_add(value.len());
            if total > MAX_HEADER_LIST {
                return Err(DecodeError::TooLarge);
            }
            out.push((name, value));
        }
        Ok(out)
    }
}

/// Code length of each symbol (0..=255, then EOS = 256) of the HPACK
/// Huffman code (RFC 7541, Appendix B, column "len"). The code is
/// canonical: the codes follow from the lengths alone (shorter first, then
/// by symbol), which [`tests`] checks against codes printed in the RFC.
const HUFFMAN_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];

const MAX_LEN: usize = 30;
const EOS: u16 = 256;

/// The canonical code's decoding tables: symbols ordered by (length,
/// symbol); per length, how many codes and the first code.
struct Canonical {
    symbols: [u16; 257],
    count: [u32; MAX_LEN + 1],
    first_code: [u32; MAX_LEN + 1],
    first_index: [u32; MAX_LEN + 1],
}

const fn canonical() -> Canonical {
    let mut c = Canonical {
        symbols: [0; 257],
        count: [0; MAX_LEN + 1],
        first_code: [0; MAX_LEN + 1],
        first_index: [0; MAX_LEN + 1],
    };
    let mut s = 0;
    while s < 257 {
        c.count[HUFFMAN_LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let mut code = 0u32;
    let mut index = 0u32;
    let mut len = 1;
    while len <= MAX_LEN {
        c.first_code[len] = code;
        c.first_index[len] = index;
        code = (code + c.count[len]) << 1;
        index += c.count[len];
        len += 1;
    }
    let mut next = c.first_index;
    let mut s = 0;
    while s < 257 {
        let l = HUFFMAN_LENGTHS[s] as usize;
        c.symbols[next[l] as usize] = s as u16;
        next[l] += 1;
        s += 1;
    }
    c
}

static CANONICAL: Canonical = canonical();

/// Decodes a Huffman-coded string: the padding (at most 7 bits) must be a
/// prefix of EOS (all ones), and EOS itself must not appear.
fn huffman_decode(raw: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let c = &CANONICAL;
    let mut out = Vec::with_capacity(raw.len() * 8 / 5);
    let mut code = 0u32;
    let mut len = 0usize;
    for &byte in raw {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if len > MAX_LEN {
                return Err(DecodeError::BadHuffman);
            }
            let offset = code.wrapping_sub(c.first_code[len]);
            if code >= c.first_code[len] && offset < c.count[len] {
                let symbol = c.symbols[(c.first_index[len] + offset) as usize];
                if symbol == EOS {
                    return Err(DecodeError::BadHuffman);
                }
                out.push(symbol as u8);
                code = 0;
                len = 0;
            }
        }
    }
    // Left over: fewer than 8 bits, all ones.
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(DecodeError::BadHuffman);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn code_of(symbol: usize) -> (u32, u8) {
        let c = &CANONICAL;
        let len = HUFFMAN_LENGTHS[symbol] as usize;
        let pos = (c.first_index[len]..c.first_index[len] + c.count[len])
            .find(|&i| usize::from(c.symbols[i as usize]) == symbol)
            .unwrap();
        (c.first_code[len] + pos - c.first_index[len], len as u8)
    }

    #[test]
    fn the_canonical_code_is_the_rfcs() {
        // Codes printed in RFC 7541, Appendix B.
        assert_eq!(code_of(0), (0x1ff8, 13));
        assert_eq!(code_of(1), (0x7fffd8, 23));
        assert_eq!(code_of(10), (0x3ffffffc, 30));
        assert_eq!(code_of(usize::from(b' ')), (0x14, 6));
        assert_eq!(code_of(usize::from(b'0')), (0x0, 5));
        assert_eq!(code_of(usize::from(b'a')), (0x3, 5));
        assert_eq!(code_of(usize::from(b'z')), (0x7b, 7));
        assert_eq!(code_of(usize::from(b'~')), (0x1ffd, 13));
        assert_eq!(code_of(255), (0x3ffffee, 26));
        assert_eq!(code_of(256), (0x3fffffff, 30));
        // A complete prefix code: the Kraft sum is exactly 1.
        let kraft: u64 = HUFFMAN_LENGTHS.iter().map(|&l| 1u64 << (30 - l)).sum();
        assert_eq!(kraft, 1 << 30);
    }

    #[test]
    fn huffman_strings_of_the_rfc_examples() {
        // RFC 7541, C.4 and C.6.
        for (coded, plain) in [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
        ] {
            assert_eq!(huffman_decode(&hex(coded)).unwrap(), plain.as_bytes());
        }
        // Padding longer than 7 bits, or not all ones; EOS inside.
        assert!(huffman_decode(&hex("ff")).is_err());
        assert!(huffman_decode(&hex("f1e3 c2e5 f23a 6ba0 ab90 f4fe")).is_err());
        assert!(huffman_decode(&hex("ffff fffc")).is_err());
        assert_eq!(huffman_decode(&[]).unwrap(), b"");
    }

    #[test]
    fn response_blocks_of_the_rfc_with_the_dynamic_table() {
        // RFC 7541, C.6 (responses with Huffman, table size 256).
        let mut d = Decoder::default();
        // Start with a size update to 256, as the RFC's table is that size.
        let mut first = vec![0x3f, 0xe1, 0x01];
        first.extend(hex(
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        ));
        let h = d.decode(&first).unwrap();
        assert_eq!(h[0], (b":status".to_vec(), b"302".to_vec()));
        assert_eq!(
            h[3],
            (b"location".to_vec(), b"https://www.example.com".to_vec())
        );
        assert_eq!(d.size, 222);
        let h = d.decode(&hex("4883 640e ff c1c0 bf")).unwrap();
        assert_eq!(h[0], (b":status".to_vec(), b"307".to_vec()));
        assert_eq!(h[1], (b"cache-control".to_vec(), b"private".to_vec()));
        assert_eq!(h[3].1, b"https://www.example.com");
        assert_eq!(d.size, 222);
        let h = d
            .decode(&hex(
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
                 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
                 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ))
            .unwrap();
        assert_eq!(h[0], (b":status".to_vec(), b"200".to_vec()));
        assert_eq!(h[4], (b"content-encoding".to_vec(), b"gzip".to_vec()));
        assert_eq!(
            h[5].1,
            b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1".to_vec()
        );
        assert_eq!(d.size, 215);
    }

    #[test]
    fn what_the_encoder_writes_decodes_back() {
        let mut b = Vec::new();
        indexed(&mut b, index::METHOD_POST);
        literal_indexed_name(&mut b, index::PATH, b"/otpd.v1.Otpd/Verify");
        literal(&mut b, b"te", b"trailers");
        literal(&mut b, b"x-long", &[b'a'; 300]);
        let h = Decoder::default().decode(&b).unwrap();
        assert_eq!(h[0], (b":method".to_vec(), b"POST".to_vec()));
        assert_eq!(h[1], (b":path".to_vec(), b"/otpd.v1.Otpd/Verify".to_vec()));
        assert_eq!(h[2], (b"te".to_vec(), b"trailers".to_vec()));
        assert_eq!(h[3].1.len(), 300);
    }

    #[test]
    fn bad_blocks_are_errors() {
        let mut d = Decoder::default();
        assert_eq!(d.decode(&[0x80]), Err(DecodeError::BadIndex));
        assert_eq!(d.decode(&[0xbe]), Err(DecodeError::BadIndex));
        assert_eq!(d.decode(&[0x04, 0x05, b'a']), Err(DecodeError::Truncated));
        assert_eq!(d.decode(&[0xff]), Err(DecodeError::Truncated));
        assert_eq!(
            d.decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(DecodeError::Overflow)
        );
        // A size update above 4096, or after a field.
        assert_eq!(
            d.decode(&[0x3f, 0xe2, 0x1f]),
            Err(DecodeError::BadTableSize)
        );
        assert_eq!(d.decode(&[0x82, 0x20]), Err(DecodeError::BadTableSize));
        // Too much: 20 fields of 1000 bytes.
        let mut b = Vec::new();
        for _ in 0..20 {
            literal(&mut b, b"x", &[b'a'; 1000]);
        }
        assert_eq!(d.decode(&b), Err(DecodeError::TooLarge));
    }
}
