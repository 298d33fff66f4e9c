//! A strict reader over untrusted bytes: big-endian integers and fixed-size
//! fields, where a read past the end names the field it was reading. Every
//! decoder of the workspace uses it (handshake messages here; peer records
//! and key files in pqnode-keys); each maps [`Truncated`] into its own error.

/// A read ran past the end of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated(pub &'static str);

/// Reads `buf` from the front; never panics, whatever the bytes.
#[derive(Debug)]
pub struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        ByteReader { buf, pos: 0 }
    }

    /// How many bytes have been read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Truncated> {
        let end = self.pos.checked_add(n).ok_or(Truncated(field))?;
        let out = self.buf.get(self.pos..end).ok_or(Truncated(field))?;
        self.pos = end;
        Ok(out)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Truncated> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    /// A byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, Truncated> {
        Ok(self.take(1, field)?[0])
    }

    /// A big-endian u16.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, Truncated> {
        self.array(field).map(u16::from_be_bytes)
    }

    /// A big-endian u32.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, Truncated> {
        self.array(field).map(u32::from_be_bytes)
    }

    /// A big-endian u64.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, Truncated> {
        self.array(field).map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_order_and_names_the_field_that_ran_out() {
        let mut r = ByteReader::new(&[1, 0, 2, 0, 0, 0, 3, 9]);
        assert_eq!(r.u8("a"), Ok(1));
        assert_eq!(r.u16("b"), Ok(2));
        assert_eq!(r.u32("c"), Ok(3));
        assert_eq!((r.position(), r.remaining()), (7, 1));
        assert_eq!(r.u64("d"), Err(Truncated("d")));
        assert_eq!(r.take(usize::MAX, "e"), Err(Truncated("e")));
        assert_eq!(r.array::<1>("f"), Ok([9]));
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.u8("g"), Err(Truncated("g")));
    }
}
