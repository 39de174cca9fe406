//! The JSON-array ("exec form") reader used by `RUN`, `CMD`, `COPY`, ….
//!
//! BuildKit decodes the whole argument text as one JSON value and accepts it
//! when it is an array; any element that is not a string makes the
//! instruction a hard error, while invalid JSON silently falls back to the
//! shell form. This is a small validating reader with Go's decoding rules
//! (lone surrogates become U+FFFD) and no recursion, so hostile nesting
//! cannot exhaust the stack.

/// Outcome of trying to read an exec-form argument list.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JsonArray {
    /// A JSON array whose elements are all strings.
    Strings(Vec<String>),
    /// Valid JSON array with at least one non-string element.
    NotAllStrings,
    /// Not a JSON array (or not valid JSON).
    NotJson,
}

/// Maximum nesting accepted inside the array, like Go's decoder limit.
const MAX_NESTING: usize = 10_000;

struct Reader<'a> {
    s: &'a [u8],
    pos: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Array,
    Object,
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, lit: &[u8]) -> Option<()> {
        if self.s[self.pos..].starts_with(lit) {
            self.pos += lit.len();
            Some(())
        } else {
            None
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.pos..self.pos + 4)?;
        let txt = std::str::from_utf8(h).ok()?;
        if !txt.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        u32::from_str_radix(txt, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        if !self.eat(b'"') {
            return None;
        }
        let mut out: Vec<u8> = Vec::new();
        loop {
            let b = self.peek()?;
            self.pos += 1;
            match b {
                b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    let e = self.peek()?;
                    self.pos += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            if (0xD800..0xDC00).contains(&hi) {
                                // A high surrogate pairs with a following
                                // `\uDC00`-`\uDFFF`; otherwise it decodes to
                                // U+FFFD and the next escape stands alone.
                                let save = self.pos;
                                let mut c = '\u{FFFD}';
                                if self.s[self.pos..].starts_with(b"\\u") {
                                    self.pos += 2;
                                    match self.hex4() {
                                        Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                                            let cp =
                                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                                            c = char::from_u32(cp).unwrap_or('\u{FFFD}');
                                        }
                                        _ => self.pos = save,
                                    }
                                }
                                c
                            } else {
                                char::from_u32(hi).unwrap_or('\u{FFFD}')
                            }
                        }
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                b if b < 0x20 => return None,
                b => out.push(b),
            }
        }
    }

    fn number(&mut self) -> Option<()> {
        self.eat(b'-');
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
            }
            _ => return None,
        }
        if self.eat(b'.') {
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
        }
        Some(())
    }

    /// Reads the top-level array. `None` means invalid JSON.
    fn array(&mut self) -> Option<(Vec<String>, bool)> {
        let mut strings = Vec::new();
        let mut all_strings = true;
        let mut stack: Vec<Frame> = vec![Frame::Array];
        // `expect_value` is true right after `[`, `,` or `:`.
        self.pos += 1; // the opening `[`
        self.ws();
        if self.eat(b']') {
            stack.pop();
        }
        while !stack.is_empty() {
            self.ws();
            let top_level = stack.len() == 1;
            // In an object, read `"key" :` first.
            if stack.last() == Some(&Frame::Object) {
                self.string()?;
                self.ws();
                if !self.eat(b':') {
                    return None;
                }
                self.ws();
            }
            // A value.
            match self.peek()? {
                b'"' => {
                    let s = self.string()?;
                    if top_level {
                        strings.push(s);
                    }
                }
                b'[' | b'{' => {
                    if top_level {
                        all_strings = false;
                    }
                    let frame = if self.peek() == Some(b'[') {
                        Frame::Array
                    } else {
                        Frame::Object
                    };
                    self.pos += 1;
                    if stack.len() >= MAX_NESTING {
                        return None;
                    }
                    self.ws();
                    let close = if frame == Frame::Array { b']' } else { b'}' };
                    if !self.eat(close) {
                        stack.push(frame);
                        continue;
                    }
                }
                b't' => {
                    self.literal(b"true")?;
                    all_strings &= !top_level;
                }
                b'f' => {
                    self.literal(b"false")?;
                    all_strings &= !top_level;
                }
                b'n' => {
                    self.literal(b"null")?;
                    all_strings &= !top_level;
                }
                _ => {
                    self.number()?;
                    all_strings &= !top_level;
                }
            }
            // After a value: `,` continues the container, a closer ends it
            // (possibly several in a row).
            loop {
                self.ws();
                let frame = *stack.last()?;
                let close = if frame == Frame::Array { b']' } else { b'}' };
                if self.eat(b',') {
                    break;
                }
                if self.eat(close) {
                    stack.pop();
                    if stack.is_empty() {
                        break;
                    }
                    continue;
                }
                return None;
            }
        }
        self.ws();
        if self.pos != self.s.len() {
            return None;
        }
        Some((strings, all_strings))
    }
}

/// Tries to read `rest` as a JSON array of strings.
pub(crate) fn parse_json_array(rest: &str) -> JsonArray {
    let trimmed = rest.trim_start();
    if !trimmed.starts_with('[') {
        return JsonArray::NotJson;
    }
    let mut r = Reader {
        s: trimmed.as_bytes(),
        pos: 0,
    };
    match r.array() {
        Some((strings, true)) => JsonArray::Strings(strings),
        Some((_, false)) => JsonArray::NotAllStrings,
        None => JsonArray::NotJson,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> JsonArray {
        JsonArray::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn arrays() {
        assert_eq!(parse_json_array("[]"), strings(&[]));
        assert_eq!(
            parse_json_array(" [ \"a\" ,\t\"b\" ] "),
            strings(&["a", "b"])
        );
        assert_eq!(
            parse_json_array(r#"["\u0000\/\ud83d\ude00\ud800"]"#),
            strings(&["\0/😀\u{FFFD}"])
        );
        assert_eq!(
            parse_json_array(r#"["a", ["b"]]"#),
            JsonArray::NotAllStrings
        );
        assert_eq!(
            parse_json_array(r#"["a", {"k": [1, {}]}, 2.5e3, null]"#),
            JsonArray::NotAllStrings
        );
        assert_eq!(parse_json_array(r#"["a""#), JsonArray::NotJson);
        assert_eq!(parse_json_array(r#"["a"] x"#), JsonArray::NotJson);
        assert_eq!(parse_json_array(r#"['a']"#), JsonArray::NotJson);
        assert_eq!(parse_json_array(r#"[1,]"#), JsonArray::NotJson);
        assert_eq!(parse_json_array(r#"[01]"#), JsonArray::NotJson);
        assert_eq!(parse_json_array("[\"a\nb\"]"), JsonArray::NotJson);
        let deep = "[".repeat(20_000);
        assert_eq!(parse_json_array(&deep), JsonArray::NotJson);
    }
}
