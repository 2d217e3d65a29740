//! The `.npy` header: a small parser for the Python dict literal NumPy writes
//! (`{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }`), tolerant of key order,
//! spacing, quotes and trailing commas, and strict about everything else.

use super::MAX_RANK;
use crate::DType;

/// What a header says about the array.
#[derive(Debug, PartialEq)]
pub(super) struct Header {
    /// The element type.
    pub(super) dtype: DType,
    /// True when the data is big-endian.
    pub(super) big_endian: bool,
    /// The dimensions (C order).
    pub(super) shape: Vec<usize>,
}

/// Parses the header dict literal: `{'descr': ..., 'fortran_order': ..., 'shape': (...), }`.
pub(super) fn parse_dict(text: &[u8], utf8: bool) -> std::result::Result<Header, String> {
    let mut p = DictParser { text, pos: 0, utf8 };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    p.skip_space();
    p.expect(b'{')?;
    loop {
        p.skip_space();
        if p.eat(b'}') {
            break;
        }
        let key_pos = p.pos;
        let key = p.string()?;
        p.skip_space();
        p.expect(b':')?;
        p.skip_space();
        let twice = match key.as_str() {
            "descr" => {
                if p.peek() == Some(b'[') {
                    return Err(p.error("structured (record) dtypes are not supported"));
                }
                descr.replace(p.string()?).is_some()
            }
            "fortran_order" => fortran.replace(p.boolean()?).is_some(),
            "shape" => shape.replace(p.tuple()?).is_some(),
            _ => {
                p.pos = key_pos;
                return Err(p.error(&format!(
                    "unexpected key '{key}' (expected 'descr', 'fortran_order' and 'shape')"
                )));
            }
        };
        if twice {
            p.pos = key_pos;
            return Err(p.error(&format!("key '{key}' appears twice")));
        }
        p.skip_space();
        if p.eat(b'}') {
            break;
        }
        if !p.eat(b',') {
            return Err(p.error("expected ',' or '}' after a value"));
        }
    }
    p.skip_space();
    if p.pos != text.len() {
        return Err(p.error("unexpected text after the dictionary"));
    }
    let missing = |k: &str| p.error(&format!("the key '{k}' is missing"));
    let descr = descr.ok_or_else(|| missing("descr"))?;
    let fortran = fortran.ok_or_else(|| missing("fortran_order"))?;
    let shape = shape.ok_or_else(|| missing("shape"))?;
    let (dtype, big_endian) = parse_descr(&descr)?;
    if fortran {
        return Err(format!(
            "Fortran-order (column-major) arrays are not supported (shape {shape:?}); \
             save a C-order array, e.g. np.save(path, np.ascontiguousarray(a))"
        ));
    }
    Ok(Header {
        dtype,
        big_endian,
        shape,
    })
}

/// Maps a NumPy type string to a dtype and byte order (true for big-endian).
fn parse_descr(descr: &str) -> std::result::Result<(DType, bool), String> {
    let (order, code) = match descr.as_bytes().first() {
        Some(&c @ (b'<' | b'>' | b'|' | b'=')) => (c, &descr[1..]),
        _ => (b'=', descr),
    };
    let dtype = match code {
        "f4" => DType::F32,
        "f8" => DType::F64,
        "f2" => DType::F16,
        "i8" => DType::I64,
        "i4" => DType::I32,
        "u1" => DType::U8,
        "b1" => DType::Bool,
        _ => {
            return Err(format!(
                "unsupported dtype '{}': Tandem reads '<f4' (float32), '<f8' (float64), \
                 '<f2' (float16), '<i8' (int64), '<i4' (int32), '|u1' (uint8) and '|b1' (bool), \
                 little- or big-endian",
                descr.escape_debug()
            ))
        }
    };
    let big_endian = match order {
        b'<' => false,
        b'>' => true,
        b'=' => cfg!(target_endian = "big"),
        _ if dtype.size_in_bytes() == 1 => false,
        _ => {
            return Err(format!(
                "dtype '{descr}' has no byte order ('|' is for one-byte types only)"
            ))
        }
    };
    Ok((dtype, big_endian))
}

/// Bytes shown in a message: printable ASCII as is, anything else as `\xNN`.
pub(super) fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b' '..=b'~' => (b as char).to_string(),
            _ => format!("\\x{b:02x}"),
        })
        .collect()
}

/// A cursor over the header text.
struct DictParser<'a> {
    text: &'a [u8],
    pos: usize,
    utf8: bool,
}

impl DictParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let found = self.peek() == Some(c);
        if found {
            self.pos += 1;
        }
        found
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", c as char)))
        }
    }

    /// A message pointing at the current position, quoting (the start of) the header.
    fn error(&self, what: &str) -> String {
        const SHOWN: usize = 160;
        let shown = &self.text[..self.text.len().min(SHOWN)];
        let more = if self.text.len() > SHOWN { "..." } else { "" };
        format!(
            "invalid header: {what} at byte {} of \"{}{more}\"",
            self.pos,
            printable(shown)
        )
    }

    /// A quoted string without escapes.
    fn string(&mut self) -> std::result::Result<String, String> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(self.error("expected a quoted string")),
        };
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.peek() {
                Some(c) if c == quote => break,
                Some(b'\\') => return Err(self.error("escapes in strings are not supported")),
                Some(b'\n') | None => return Err(self.error("unterminated string")),
                Some(_) => self.pos += 1,
            }
        }
        let raw = &self.text[start..self.pos];
        self.pos += 1;
        if self.utf8 {
            String::from_utf8(raw.to_vec()).map_err(|_| self.error("invalid UTF-8 in a string"))
        } else {
            // Headers of versions 1.0 and 2.0 are latin-1.
            Ok(raw.iter().map(|&b| b as char).collect())
        }
    }

    /// `True` or `False`.
    fn boolean(&mut self) -> std::result::Result<bool, String> {
        for (word, value) in [(&b"True"[..], true), (b"False", false)] {
            if self.text[self.pos..].starts_with(word) {
                self.pos += word.len();
                return Ok(value);
            }
        }
        Err(self.error("expected True or False"))
    }

    /// A tuple of non-negative integers: `()`, `(3,)`, `(2, 3)`, `(2, 3,)`.
    fn tuple(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        let mut comma = false;
        loop {
            self.skip_space();
            if self.eat(b')') {
                break;
            }
            if dims.len() == MAX_RANK {
                return Err(self.error(&format!("more than {MAX_RANK} dimensions")));
            }
            dims.push(self.integer()?);
            self.skip_space();
            if self.eat(b',') {
                comma = true;
            } else if self.eat(b')') {
                break;
            } else {
                return Err(self.error("expected ',' or ')' in the shape"));
            }
        }
        if dims.len() == 1 && !comma {
            return Err(self.error("the shape is not a tuple (a one-element tuple needs a comma)"));
        }
        Ok(dims)
    }

    /// A non-negative decimal integer (Python 2's `L` suffix is accepted).
    fn integer(&mut self) -> std::result::Result<usize, String> {
        if self.peek() == Some(b'-') {
            return Err(self.error("negative dimension"));
        }
        let start = self.pos;
        let mut value = 0usize;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add((c - b'0') as usize))
                .ok_or_else(|| self.error("dimension too large"))?;
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("expected a dimension"));
        }
        if matches!(self.peek(), Some(b'L' | b'l')) {
            self.pos += 1;
        }
        Ok(value)
    }
}
