//! Application messages over records (PROTOCOL.md §7): fragmentation and
//! strict in-order reassembly.
//!
//! ```text
//! fragment = u64 message id || u32 total length || u32 offset || bytes
//! ```
//!
//! One stream carries one peer's messages in order, so the receiver demands
//! that fragments of a message arrive contiguously, that a message is whole
//! before the next begins, and that message ids increase. Anything else is a
//! protocol violation that ends the session.
//!
//! A well-formed message the receiver will not take — larger than its
//! maximum, or with no room left for partial messages — is refused at its
//! first fragment ([`Pushed::Refused`], answered with a receipt, §7 rev 4)
//! and the rest of it is read and skipped: the session goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use pqnode_crypto::channel::MAX_BODY;
use pqnode_crypto::receipt::ReceiptStatus;

/// Bytes of a fragment's header.
pub const HEADER_LEN: usize = 16;
/// Most payload bytes one fragment carries (a record body minus the header).
pub const MAX_CHUNK: usize = MAX_BODY - HEADER_LEN;

/// A fragment that broke the rules of §7.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FragmentError {
    /// Shorter than its header.
    #[error("fragment of {0} bytes is shorter than its 16-byte header")]
    Truncated(usize),
    /// `offset + len(bytes) > total`.
    #[error("fragment overruns its message: offset {offset} + {len} bytes > total {total}")]
    Overrun {
        /// Offset.
        offset: u32,
        /// Bytes carried.
        len: usize,
        /// Total length.
        total: u32,
    },
    /// Message ids must increase.
    #[error("message id {got} does not follow {last}")]
    IdNotIncreasing {
        /// The last id seen.
        last: u64,
        /// The id received.
        got: u64,
    },
    /// A fragment that is not the next piece of the message in progress.
    #[error("fragment out of order: message {id} expected offset {expected}, got {got}")]
    OutOfOrder {
        /// Message id.
        id: u64,
        /// The offset expected.
        expected: u32,
        /// The offset received.
        got: u32,
    },
    /// A fragment of another message while one is incomplete, or a total
    /// that changed between fragments.
    #[error("fragment interleaves with incomplete message {0}")]
    Interleaved(u64),
}

/// What one fragment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Part of a message still incomplete (or of one being skipped).
    More,
    /// A whole message: its id and bytes.
    Whole(u64, Vec<u8>),
    /// The first fragment of a message refused: larger than the maximum
    /// (`TooLarge`), or partial messages of all peers would exceed their
    /// budget (`InboxFull`, §9 rev 3). The rest of it will be skipped.
    Refused {
        /// The message id.
        id: u64,
        /// What its receipt says.
        status: ReceiptStatus,
    },
}

/// The bytes all partial (incomplete) messages may hold together, shared
/// by every session (PROTOCOL.md §9 rev 3: 256 MiB).
#[derive(Debug)]
pub struct PartialBudget {
    used: AtomicUsize,
    max: usize,
}

impl PartialBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(PartialBudget {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn reserve(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.max)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The message id a fragment names (its first 8 bytes), if it has a whole
/// header.
pub fn message_id(fragment: &[u8]) -> Option<u64> {
    if fragment.len() < HEADER_LEN {
        return None;
    }
    let id: [u8; 8] = fragment.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(id))
}

/// Splits one message into fragment bodies (each fits one data record). An
/// empty message is one fragment without bytes.
pub fn fragments(id: u64, message: &[u8]) -> impl Iterator<Item = Vec<u8>> + Send + '_ {
    let total = message.len() as u32;
    let count = message.len().div_ceil(MAX_CHUNK).max(1);
    (0..count).map(move |i| {
        let offset = i * MAX_CHUNK;
        let chunk = &message[offset..(offset + MAX_CHUNK).min(message.len())];
        let mut f = Vec::with_capacity(HEADER_LEN + chunk.len());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&(offset as u32).to_be_bytes());
        f.extend_from_slice(chunk);
        f
    })
}

/// Reassembles one sender's fragments.
#[derive(Debug)]
pub struct Reassembler {
    max_message: usize,
    last_id: Option<u64>,
    current: Option<(u64, u32, Vec<u8>)>,
    /// A refused message being skipped: id, total, bytes seen.
    skipping: Option<(u64, u32, u32)>,
    /// When the incomplete message began, and the bytes it reserved.
    partial: Option<(Instant, usize)>,
    budget: Option<Arc<PartialBudget>>,
}

impl Drop for Reassembler {
    fn drop(&mut self) {
        self.release();
    }
}

impl Reassembler {
    /// A reassembler refusing messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Reassembler {
            max_message,
            last_id: None,
            current: None,
            skipping: None,
            partial: None,
            budget: None,
        }
    }

    /// [`Reassembler::new`] whose incomplete messages reserve their whole
    /// announced size from `budget` until they complete (or it is dropped).
    pub fn with_budget(max_message: usize, budget: Arc<PartialBudget>) -> Self {
        Reassembler {
            max_message,
            last_id: None,
            current: None,
            skipping: None,
            partial: None,
            budget: Some(budget),
        }
    }

    /// When the incomplete message in progress began, if there is one (the
    /// caller ends a session whose partial message is older than 30 s).
    pub fn partial_since(&self) -> Option<Instant> {
        self.partial.map(|(t, _)| t)
    }

    /// The id of the message in progress, if one is incomplete (its
    /// receipt says `Incomplete` when it never completes).
    pub fn incomplete(&self) -> Option<u64> {
        self.current.as_ref().map(|(id, _, _)| *id)
    }

    fn release(&mut self) {
        if let (Some((_, n)), Some(b)) = (self.partial.take(), &self.budget) {
            b.release(n);
        }
    }

    /// Takes one fragment.
    pub fn push(&mut self, fragment: &[u8]) -> Result<Pushed, FragmentError> {
        if fragment.len() < HEADER_LEN {
            return Err(FragmentError::Truncated(fragment.len()));
        }
        let header = |r: std::ops::Range<usize>| {
            fragment
                .get(r)
                .ok_or(FragmentError::Truncated(fragment.len()))
        };
        let id = u64::from_be_bytes(
            header(0..8)?
                .try_into()
                .map_err(|_| FragmentError::Truncated(fragment.len()))?,
        );
        let total = u32::from_be_bytes(
            header(8..12)?
                .try_into()
                .map_err(|_| FragmentError::Truncated(fragment.len()))?,
        );
        let offset = u32::from_be_bytes(
            header(12..16)?
                .try_into()
                .map_err(|_| FragmentError::Truncated(fragment.len()))?,
        );
        let bytes = &fragment[HEADER_LEN..];
        if u64::from(offset) + bytes.len() as u64 > u64::from(total) {
            return Err(FragmentError::Overrun {
                offset,
                len: bytes.len(),
                total,
            });
        }
        // The next piece of a refused message: checked like any, dropped.
        if let Some((skip_id, skip_total, seen)) = &mut self.skipping {
            if *skip_id != id || *skip_total != total {
                return Err(FragmentError::Interleaved(*skip_id));
            }
            if offset != *seen {
                return Err(FragmentError::OutOfOrder {
                    id,
                    expected: *seen,
                    got: offset,
                });
            }
            *seen += bytes.len() as u32;
            if *seen == total {
                self.skipping = None;
            }
            return Ok(Pushed::More);
        }
        match &mut self.current {
            Some((cur_id, cur_total, buf)) => {
                if *cur_id != id || *cur_total != total {
                    return Err(FragmentError::Interleaved(*cur_id));
                }
                if offset as usize != buf.len() {
                    return Err(FragmentError::OutOfOrder {
                        id,
                        expected: buf.len() as u32,
                        got: offset,
                    });
                }
                buf.extend_from_slice(bytes);
            }
            None => {
                if let Some(last) = self.last_id
                    && id <= last
                {
                    return Err(FragmentError::IdNotIncreasing { last, got: id });
                }
                if offset != 0 {
                    return Err(FragmentError::OutOfOrder {
                        id,
                        expected: 0,
                        got: offset,
                    });
                }
                self.last_id = Some(id);
                let refused = if total as usize > self.max_message {
                    Some(ReceiptStatus::TooLarge)
                } else if bytes.len() < total as usize {
                    let need = total as usize;
                    match &self.budget {
                        Some(b) if !b.reserve(need) => Some(ReceiptStatus::InboxFull),
                        _ => {
                            self.partial = Some((Instant::now(), need));
                            None
                        }
                    }
                } else {
                    None
                };
                if let Some(status) = refused {
                    if bytes.len() < total as usize {
                        self.skipping = Some((id, total, bytes.len() as u32));
                    }
                    return Ok(Pushed::Refused { id, status });
                }
                let mut buf = Vec::with_capacity((total as usize).min(MAX_CHUNK * 2));
                buf.extend_from_slice(bytes);
                self.current = Some((id, total, buf));
            }
        }
        match &self.current {
            Some((_, total, buf)) if buf.len() == *total as usize => {
                let (id, _, buf) = self.current.take().ok_or(FragmentError::Truncated(0))?;
                self.release();
                Ok(Pushed::Whole(id, buf))
            }
            // Fragments that carry nothing for an incomplete message are
            // allowed but cannot stall forever: the partial-message timeout
            // and the stream's own limits apply.
            _ => Ok(Pushed::More),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reassemble(
        max: usize,
        frags: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<Vec<(u64, Vec<u8>)>, FragmentError> {
        let mut r = Reassembler::new(max);
        let mut out = Vec::new();
        for f in frags {
            match r.push(&f)? {
                Pushed::Whole(id, m) => out.push((id, m)),
                Pushed::More => {}
                Pushed::Refused { id, status } => panic!("message {id} refused: {status}"),
            }
        }
        Ok(out)
    }

    #[test]
    fn sizes_round_trip() {
        for len in [0usize, 1, MAX_CHUNK - 1, MAX_CHUNK, MAX_CHUNK + 1, 1 << 20] {
            let msg: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frags: Vec<_> = fragments(5, &msg).collect();
            assert!(frags.iter().all(|f| f.len() <= MAX_BODY));
            assert_eq!(reassemble(1 << 20, frags).unwrap(), vec![(5, msg)]);
        }
    }

    #[test]
    fn violations_are_typed_errors() {
        let msg = vec![1u8; MAX_CHUNK * 2 + 10];
        let frags: Vec<_> = fragments(1, &msg).collect();
        // reordered
        let mut swapped = frags.clone();
        swapped.swap(0, 1);
        assert!(matches!(
            reassemble(1 << 20, swapped),
            Err(FragmentError::OutOfOrder { .. })
        ));
        // dropped middle fragment
        let dropped = vec![frags[0].clone(), frags[2].clone()];
        assert!(matches!(
            reassemble(1 << 20, dropped),
            Err(FragmentError::OutOfOrder { .. })
        ));
        // interleaved with another message
        let other: Vec<_> = fragments(2, b"x").collect();
        let inter = vec![frags[0].clone(), other[0].clone()];
        assert_eq!(
            reassemble(1 << 20, inter),
            Err(FragmentError::Interleaved(1))
        );
        // ids must increase
        let a: Vec<_> = fragments(7, b"a").collect();
        let b: Vec<_> = fragments(7, b"b").collect();
        assert_eq!(
            reassemble(1 << 20, [a[0].clone(), b[0].clone()]),
            Err(FragmentError::IdNotIncreasing { last: 7, got: 7 })
        );
        // overrun and truncation
        let mut over = fragments(1, b"abc").next().unwrap();
        over.push(b'd');
        assert!(matches!(
            reassemble(1 << 20, [over]),
            Err(FragmentError::Overrun { .. })
        ));
        assert_eq!(
            reassemble(1 << 20, [vec![0u8; 15]]),
            Err(FragmentError::Truncated(15))
        );
    }

    #[test]
    fn partial_messages_reserve_the_shared_budget_until_complete() {
        let budget = PartialBudget::new(3 * MAX_CHUNK);
        let big = vec![7u8; 2 * MAX_CHUNK];
        let frags: Vec<_> = fragments(1, &big).collect();
        let mut a = Reassembler::with_budget(1 << 20, budget.clone());
        let mut b = Reassembler::with_budget(1 << 20, budget.clone());
        assert!(a.partial_since().is_none());
        assert_eq!(a.push(&frags[0]), Ok(Pushed::More));
        assert!(a.partial_since().is_some());
        assert_eq!(a.incomplete(), Some(1));
        assert_eq!(budget.used(), 2 * MAX_CHUNK);
        // A second partial message of the same size does not fit: refused
        // as inbox-full, its rest skipped, and the next message taken.
        assert_eq!(
            b.push(&frags[0]),
            Ok(Pushed::Refused {
                id: 1,
                status: ReceiptStatus::InboxFull
            })
        );
        assert_eq!(b.push(&frags[1]), Ok(Pushed::More));
        assert_eq!(b.incomplete(), None);
        // Single-fragment messages need no reservation.
        let small: Vec<_> = fragments(2, b"hi").collect();
        assert!(matches!(b.push(&small[0]), Ok(Pushed::Whole(2, _))));
        // Completing releases it; dropping an incomplete one too.
        assert!(matches!(a.push(&frags[1]), Ok(Pushed::Whole(1, _))));
        assert_eq!(budget.used(), 0);
        let mut c = Reassembler::with_budget(1 << 20, budget.clone());
        let frags: Vec<_> = fragments(3, &big).collect();
        c.push(&frags[0]).unwrap();
        assert_eq!(budget.used(), 2 * MAX_CHUNK);
        drop(c);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_message_over_the_maximum_is_refused_skipped_and_the_next_taken() {
        let mut r = Reassembler::new(MAX_CHUNK + 10);
        let big: Vec<_> = fragments(4, &vec![1u8; 3 * MAX_CHUNK]).collect();
        assert_eq!(
            r.push(&big[0]),
            Ok(Pushed::Refused {
                id: 4,
                status: ReceiptStatus::TooLarge
            })
        );
        // Its rest must still come in order, and is dropped.
        assert!(matches!(
            r.push(&big[2]),
            Err(FragmentError::OutOfOrder { .. })
        ));
        let mut r = Reassembler::new(MAX_CHUNK + 10);
        r.push(&big[0]).unwrap();
        let other: Vec<_> = fragments(5, b"x").collect();
        assert_eq!(r.push(&other[0]), Err(FragmentError::Interleaved(4)));
        let mut r = Reassembler::new(MAX_CHUNK + 10);
        r.push(&big[0]).unwrap();
        assert_eq!(r.push(&big[1]), Ok(Pushed::More));
        assert_eq!(r.push(&big[2]), Ok(Pushed::More));
        assert_eq!(r.push(&other[0]), Ok(Pushed::Whole(5, b"x".to_vec())));
        // A single-fragment message over the maximum: nothing to skip.
        let mut r = Reassembler::new(1);
        let two: Vec<_> = fragments(9, b"ab").collect();
        assert!(matches!(r.push(&two[0]), Ok(Pushed::Refused { id: 9, .. })));
        assert!(matches!(
            r.push(&other[0]),
            Err(FragmentError::IdNotIncreasing { .. })
        ));
        let next: Vec<_> = fragments(10, b"c").collect();
        assert_eq!(r.push(&next[0]), Ok(Pushed::Whole(10, b"c".to_vec())));
    }

    proptest! {
        #[test]
        fn arbitrary_fragments_never_panic(frags in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..20)) {
            let mut r = Reassembler::new(1024);
            for f in frags {
                if r.push(&f).is_err() { break; }
            }
        }

        #[test]
        fn messages_round_trip(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200_000), 1..4)) {
            let frags: Vec<Vec<u8>> = msgs.iter().enumerate().flat_map(|(i, m)| fragments(i as u64, m).collect::<Vec<_>>()).collect();
            let out = reassemble(1 << 20, frags).unwrap();
            prop_assert_eq!(out.into_iter().map(|(_, m)| m).collect::<Vec<_>>(), msgs);
        }
    }
}
