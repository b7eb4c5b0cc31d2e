//! Navigation over decoded tokens: typed accessors, dict lookup, iteration.

use super::decode::{int_value, Document, Token, TokenKind};

/// A view of one decoded value. Cheap to copy; every accessor is total
/// (returns `None` on a kind mismatch, never panics).
#[derive(Clone, Copy, Debug)]
pub struct Value<'a, 't> {
    pub(super) doc: Document<'a, 't>,
    pub(super) idx: usize,
}

impl<'a, 't> Document<'a, 't> {
    /// The top-level value (`None` only for an empty token slice, which a
    /// successful decode never returns).
    pub fn root(&self) -> Option<Value<'a, 't>> {
        self.tokens.first().map(|_| Value { doc: *self, idx: 0 })
    }
}

impl<'a, 't> Value<'a, 't> {
    pub(super) fn token(&self) -> Token {
        self.doc
            .tokens
            .get(self.idx)
            .copied()
            .unwrap_or(Token::EMPTY)
    }

    /// The value's kind.
    pub fn kind(&self) -> TokenKind {
        self.token().kind()
    }

    /// Byte offset of the value in the input (for error reports).
    pub fn offset(&self) -> usize {
        self.token().span().start
    }

    /// The exact encoded bytes of this value (e.g. the `info` dict for the
    /// info-hash).
    pub fn raw(&self) -> &'a [u8] {
        self.doc.input.get(self.token().span()).unwrap_or_default()
    }

    /// The integer, if this is an integer.
    pub fn as_int(&self) -> Option<i64> {
        (self.kind() == TokenKind::Int)
            .then(|| int_value(self.raw()))
            .flatten()
    }

    /// The payload, if this is a byte string.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        let t = self.token();
        (t.kind() == TokenKind::Bytes)
            .then(|| self.doc.input.get(t.aux()..t.span().end))
            .flatten()
    }

    /// The payload as UTF-8, if this is a byte string holding valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| core::str::from_utf8(b).ok())
    }

    /// Number of elements (list) or entries (dict); 0 for scalars.
    pub fn len(&self) -> usize {
        match self.kind() {
            TokenKind::List | TokenKind::Dict => self.token().aux(),
            _ => 0,
        }
    }

    /// True for an empty container or a scalar.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Iterates a list's elements (`None` if not a list).
    pub fn as_list(&self) -> Option<ListIter<'a, 't>> {
        (self.kind() == TokenKind::List).then(|| ListIter {
            doc: self.doc,
            next: self.idx + 1,
            remaining: self.len(),
        })
    }

    /// Iterates a dict's `(key, value)` entries in input order (`None` if
    /// not a dict).
    pub fn as_dict(&self) -> Option<DictIter<'a, 't>> {
        (self.kind() == TokenKind::Dict).then(|| DictIter {
            inner: ListIter {
                doc: self.doc,
                next: self.idx + 1,
                remaining: self.len() * 2,
            },
        })
    }

    /// Looks up `key` in a dict: the first entry with that key (`None` if
    /// absent or not a dict). Linear in the dict's entry count.
    pub fn get(&self, key: &[u8]) -> Option<Value<'a, 't>> {
        self.as_dict()?.find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// Iterator over a list's elements.
#[derive(Clone, Debug)]
pub struct ListIter<'a, 't> {
    doc: Document<'a, 't>,
    next: usize,
    remaining: usize,
}

impl<'a, 't> Iterator for ListIter<'a, 't> {
    type Item = Value<'a, 't>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let tok = self.doc.tokens.get(self.next)?;
        let v = Value {
            doc: self.doc,
            idx: self.next,
        };
        self.next = tok.next();
        self.remaining -= 1;
        Some(v)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

/// Iterator over a dict's `(key bytes, value)` entries.
#[derive(Clone, Debug)]
pub struct DictIter<'a, 't> {
    inner: ListIter<'a, 't>,
}

impl<'a, 't> Iterator for DictIter<'a, 't> {
    type Item = (&'a [u8], Value<'a, 't>);

    fn next(&mut self) -> Option<Self::Item> {
        let k = self.inner.next()?;
        let v = self.inner.next()?;
        Some((k.as_bytes()?, v))
    }
}
