//! The record layer of PROTOCOL.md §6.
//!
//! ```text
//! frame     = u32 length || u64 seq || ciphertext || tag(16)
//! nonce     = 4 zero bytes || u64 seq
//! aad       = "pqnode rec v1" || u64 seq
//! plaintext = u8 kind || body     kind: 1 data, 2 key update, 3 close,
//!                                        4 receipt (rev 4)
//! ```
//!
//! Each direction has its own traffic secret, key and sequence number. Any
//! frame that does not open as exactly the next one (replayed, reordered,
//! dropped, truncated or forged) is an error after which that direction is
//! dead: the session must end. Keys are updated after a number of frames,
//! bytes or seconds; old secrets are zeroized as they are replaced.

use std::fmt;

use crate::aead::{self, TAG_LEN};
use crate::error::CryptoError;
use crate::hybrid::{self, KEY_LEN, PRK_LEN};
use crate::receipt::{RECEIPT_LEN, Receipt};
use crate::secret::Secret;

/// Largest plaintext (kind byte included), fixed by the protocol.
pub const MAX_PLAINTEXT: usize = 65536;
/// Largest body of one record (the plaintext minus its kind byte).
pub const MAX_BODY: usize = MAX_PLAINTEXT - 1;
/// Largest frame after its u32 length: seq, ciphertext, tag.
pub const MAX_FRAME: usize = 8 + MAX_PLAINTEXT + TAG_LEN;
/// Smallest frame after its u32 length (an empty-bodied record).
pub const MIN_FRAME: usize = 8 + 1 + TAG_LEN;

const AAD_LABEL: &[u8] = b"pqnode rec v1";

/// The kind byte of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 1: application data (a §7 fragment).
    Data = 1,
    /// 2: the sender switches to its next key after this frame.
    KeyUpdate = 2,
    /// 3: nothing more comes in this direction.
    Close = 3,
    /// 4: a delivery receipt (§7, rev 4), body exactly 9 bytes.
    Receipt = 4,
}

/// When a sender updates its key (PROTOCOL.md §6); settable for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyUpdatePolicy {
    /// Frames under one key (default 2^24).
    pub max_frames: u64,
    /// Plaintext bytes under one key (default 1 GiB).
    pub max_bytes: u64,
    /// Milliseconds under one key (default one hour).
    pub max_age_ms: u64,
}

impl Default for KeyUpdatePolicy {
    fn default() -> Self {
        KeyUpdatePolicy {
            max_frames: 1 << 24,
            max_bytes: 1 << 30,
            max_age_ms: 3_600_000,
        }
    }
}

/// A record-layer failure. Every one of them ends the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The frame was shorter than seq, kind and tag, or longer than the maximum.
    #[error("frame length {0} outside {MIN_FRAME}..={MAX_FRAME}")]
    BadFrameLength(usize),
    /// The frame's seq was not the next one (replay, reorder or drop).
    #[error("frame out of sequence: expected {expected}, got {got}")]
    UnexpectedSeq {
        /// The seq the receiver expected.
        expected: u64,
        /// The seq in the frame.
        got: u64,
    },
    /// The frame did not authenticate.
    #[error("frame failed authentication")]
    Forged,
    /// An unknown kind byte, or a key update or close with a body.
    #[error("invalid record: {0}")]
    InvalidRecord(&'static str),
    /// The body is larger than a record can carry.
    #[error("record body of {0} bytes exceeds {MAX_BODY}")]
    TooLarge(usize),
    /// Sending or receiving after this direction was closed.
    #[error("direction already closed")]
    Closed,
    /// An earlier error ended this direction.
    #[error("channel failed earlier")]
    Failed,
    /// The sequence number space is exhausted.
    #[error("sequence numbers exhausted")]
    SeqExhausted,
    /// Key derivation failed.
    #[error("key derivation failed: {0}")]
    Crypto(#[from] CryptoError),
}

/// One opened record.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Application data.
    Data(Vec<u8>),
    /// The peer switched keys; nothing to deliver.
    KeyUpdate,
    /// The peer will send nothing more.
    Close,
    /// A delivery receipt for one of our messages (rev 4).
    Receipt(Receipt),
}

struct DirectionKeys {
    ts: Secret<PRK_LEN>,
    key: Secret<KEY_LEN>,
}

impl DirectionKeys {
    fn new(ts: Secret<PRK_LEN>) -> Result<Self, CryptoError> {
        let key = hybrid::traffic_key(&ts)?;
        Ok(DirectionKeys { ts, key })
    }

    /// Moves to `ts' = HKDF-Expand(ts, "pqnode v1 ku", 64)`; the old secret
    /// and key are dropped (zeroized) here.
    fn update(&mut self) -> Result<(), CryptoError> {
        *self = DirectionKeys::new(hybrid::next_traffic_secret(&self.ts)?)?;
        Ok(())
    }
}

fn nonce(seq: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n
}

fn aad(seq: u64) -> [u8; 21] {
    let mut a = [0u8; 21];
    a[..13].copy_from_slice(AAD_LABEL);
    a[13..].copy_from_slice(&seq.to_be_bytes());
    a
}

/// The sending half.
pub struct Sealer {
    keys: DirectionKeys,
    seq: u64,
    frames: u64,
    bytes: u64,
    key_since_ms: Option<u64>,
    policy: KeyUpdatePolicy,
    closed: bool,
    failed: bool,
}

/// The receiving half.
pub struct Opener {
    keys: DirectionKeys,
    seq: u64,
    closed: bool,
    failed: bool,
}

/// Both halves of a session's record layer.
pub struct Channel {
    /// Seals frames to the peer.
    pub sealer: Sealer,
    /// Opens frames from the peer.
    pub opener: Opener,
}

impl Channel {
    /// A channel sending under `send_ts` and receiving under `recv_ts`.
    pub fn new(
        send_ts: Secret<PRK_LEN>,
        recv_ts: Secret<PRK_LEN>,
        policy: KeyUpdatePolicy,
    ) -> Result<Self, CryptoError> {
        Ok(Channel {
            sealer: Sealer::new(send_ts, policy)?,
            opener: Opener::new(recv_ts)?,
        })
    }

    /// The two halves, for separate reader and writer tasks.
    pub fn split(self) -> (Sealer, Opener) {
        (self.sealer, self.opener)
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("sealer", &self.sealer)
            .field("opener", &self.opener)
            .finish()
    }
}

impl Sealer {
    /// A sender starting at seq 0 under `ts`.
    pub fn new(ts: Secret<PRK_LEN>, policy: KeyUpdatePolicy) -> Result<Self, CryptoError> {
        Ok(Sealer {
            keys: DirectionKeys::new(ts)?,
            seq: 0,
            frames: 0,
            bytes: 0,
            key_since_ms: None,
            policy,
            closed: false,
            failed: false,
        })
    }

    /// The seq of the next frame.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// The current AEAD key (test vectors only).
    pub fn current_key(&self) -> &Secret<KEY_LEN> {
        &self.keys.key
    }

    /// Appends the frame(s) carrying `body` as a data record to `out`: first
    /// a key-update frame if the policy says the key is due (at `now_ms`, a
    /// monotonic clock in milliseconds supplied by the caller).
    pub fn seal_data(
        &mut self,
        body: &[u8],
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), ChannelError> {
        if body.len() > MAX_BODY {
            return Err(ChannelError::TooLarge(body.len()));
        }
        self.seal_counted(Kind::Data, body, now_ms, out)
    }

    /// Appends the frame(s) carrying `receipt` (kind 4, rev 4) to `out`,
    /// first a key update if one is due, as for data.
    pub fn seal_receipt(
        &mut self,
        receipt: &Receipt,
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), ChannelError> {
        self.seal_counted(Kind::Receipt, &receipt.encode(), now_ms, out)
    }

    /// Seals a record that counts towards the key-update policy, after the
    /// key update it makes due.
    fn seal_counted(
        &mut self,
        kind: Kind,
        body: &[u8],
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), ChannelError> {
        self.check_open()?;
        let since = *self.key_since_ms.get_or_insert(now_ms);
        let due = self.frames >= self.policy.max_frames
            || self.bytes >= self.policy.max_bytes
            || now_ms.saturating_sub(since) >= self.policy.max_age_ms;
        if due {
            self.seal_record(Kind::KeyUpdate, &[], out)?;
            self.update_key(now_ms)?;
        }
        self.seal_record(kind, body, out)
    }

    /// Forces a key update now (appends the kind-2 frame to `out`).
    pub fn seal_key_update(&mut self, now_ms: u64, out: &mut Vec<u8>) -> Result<(), ChannelError> {
        self.check_open()?;
        self.seal_record(Kind::KeyUpdate, &[], out)?;
        self.update_key(now_ms)
    }

    /// Appends a close frame; nothing more can be sealed afterwards.
    pub fn seal_close(&mut self, out: &mut Vec<u8>) -> Result<(), ChannelError> {
        self.check_open()?;
        self.seal_record(Kind::Close, &[], out)?;
        self.closed = true;
        Ok(())
    }

    fn check_open(&self) -> Result<(), ChannelError> {
        if self.failed {
            Err(ChannelError::Failed)
        } else if self.closed {
            Err(ChannelError::Closed)
        } else {
            Ok(())
        }
    }

    fn update_key(&mut self, now_ms: u64) -> Result<(), ChannelError> {
        if let Err(e) = self.keys.update() {
            self.failed = true;
            return Err(e.into());
        }
        self.frames = 0;
        self.bytes = 0;
        self.key_since_ms = Some(now_ms);
        Ok(())
    }

    fn seal_record(
        &mut self,
        kind: Kind,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ChannelError> {
        if self.seq == u64::MAX {
            self.failed = true;
            return Err(ChannelError::SeqExhausted);
        }
        let seq = self.seq;
        let frame_len = 8 + 1 + body.len() + TAG_LEN;
        let start = out.len();
        out.reserve(4 + frame_len);
        out.extend_from_slice(&(frame_len as u32).to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        let pt_start = out.len();
        out.push(kind as u8);
        out.extend_from_slice(body);
        match aead::seal_in_place(
            self.keys.key.expose(),
            &nonce(seq),
            &aad(seq),
            &mut out[pt_start..],
        ) {
            Ok(tag) => out.extend_from_slice(&tag),
            Err(e) => {
                out.truncate(start);
                self.failed = true;
                return Err(e.into());
            }
        }
        self.seq += 1;
        self.frames += 1;
        self.bytes = self.bytes.saturating_add(1 + body.len() as u64);
        Ok(())
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("seq", &self.seq)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// A receiver expecting seq 0 under `ts`.
    pub fn new(ts: Secret<PRK_LEN>) -> Result<Self, CryptoError> {
        Ok(Opener {
            keys: DirectionKeys::new(ts)?,
            seq: 0,
            closed: false,
            failed: false,
        })
    }

    /// The seq expected next.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Whether the peer closed this direction.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Opens one frame (the bytes after its u32 length). Any error is final.
    pub fn open(&mut self, frame: &[u8]) -> Result<Inbound, ChannelError> {
        if self.failed {
            return Err(ChannelError::Failed);
        }
        if self.closed {
            self.failed = true;
            return Err(ChannelError::Closed);
        }
        let result = self.open_inner(frame);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn open_inner(&mut self, frame: &[u8]) -> Result<Inbound, ChannelError> {
        if !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
            return Err(ChannelError::BadFrameLength(frame.len()));
        }
        let (seq_bytes, rest) = frame.split_at(8);
        let mut seq_arr = [0u8; 8];
        seq_arr.copy_from_slice(seq_bytes);
        let seq = u64::from_be_bytes(seq_arr);
        if seq != self.seq {
            return Err(ChannelError::UnexpectedSeq {
                expected: self.seq,
                got: seq,
            });
        }
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plaintext = ciphertext.to_vec();
        aead::open_in_place(
            self.keys.key.expose(),
            &nonce(seq),
            &aad(seq),
            &mut plaintext,
            tag,
        )
        .map_err(|_| ChannelError::Forged)?;
        self.seq = self.seq.checked_add(1).ok_or(ChannelError::SeqExhausted)?;
        let kind = plaintext
            .first()
            .copied()
            .ok_or(ChannelError::InvalidRecord("empty plaintext"))?;
        match kind {
            1 => {
                plaintext.remove(0);
                Ok(Inbound::Data(plaintext))
            }
            2 if plaintext.len() == 1 => {
                self.keys.update()?;
                Ok(Inbound::KeyUpdate)
            }
            3 if plaintext.len() == 1 => {
                self.closed = true;
                Ok(Inbound::Close)
            }
            4 if plaintext.len() == 1 + RECEIPT_LEN => Receipt::decode(&plaintext[1..])
                .map(Inbound::Receipt)
                .map_err(|_| ChannelError::InvalidRecord("receipt not 9 bytes")),
            2 => Err(ChannelError::InvalidRecord("key update with a body")),
            3 => Err(ChannelError::InvalidRecord("close with a body")),
            4 => Err(ChannelError::InvalidRecord("receipt not 9 bytes")),
            _ => Err(ChannelError::InvalidRecord("unknown kind")),
        }
    }
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("seq", &self.seq)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// Splits a buffer of frames as the sealer wrote them (u32 length prefixes)
/// into the frame bodies [`Opener::open`] takes. Stops with an error at a
/// length outside the allowed range or a truncated frame.
pub fn split_frames(mut buf: &[u8]) -> Result<Vec<&[u8]>, ChannelError> {
    let mut frames = Vec::new();
    while !buf.is_empty() {
        if buf.len() < 4 {
            return Err(ChannelError::BadFrameLength(buf.len()));
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if !(MIN_FRAME..=MAX_FRAME).contains(&len) || buf.len() < 4 + len {
            return Err(ChannelError::BadFrameLength(len));
        }
        frames.push(&buf[4..4 + len]);
        buf = &buf[4 + len..];
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(policy: KeyUpdatePolicy) -> (Sealer, Opener) {
        let ts = Secret::from_slice(&[42u8; 64]).unwrap();
        let ts2 = Secret::from_slice(&[42u8; 64]).unwrap();
        (Sealer::new(ts, policy).unwrap(), Opener::new(ts2).unwrap())
    }

    fn seal(s: &mut Sealer, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        s.seal_data(body, 0, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trip_and_sizes() {
        let (mut s, mut o) = pair(KeyUpdatePolicy::default());
        for body in [&b""[..], b"hi", &vec![7u8; MAX_BODY]] {
            let out = seal(&mut s, body);
            let frames = split_frames(&out).unwrap();
            assert_eq!(frames.len(), 1);
            assert_eq!(o.open(frames[0]).unwrap(), Inbound::Data(body.to_vec()));
        }
        assert_eq!(
            s.seal_data(&vec![0; MAX_BODY + 1], 0, &mut Vec::new()),
            Err(ChannelError::TooLarge(MAX_BODY + 1))
        );
    }

    #[test]
    fn replay_reorder_drop_and_forgery_end_the_session() {
        // replay
        let (mut s, mut o) = pair(KeyUpdatePolicy::default());
        let f0 = seal(&mut s, b"a");
        o.open(&f0[4..]).unwrap();
        assert_eq!(
            o.open(&f0[4..]),
            Err(ChannelError::UnexpectedSeq {
                expected: 1,
                got: 0
            })
        );
        let f1 = seal(&mut s, b"b");
        assert_eq!(
            o.open(&f1[4..]),
            Err(ChannelError::Failed),
            "dead after the first error"
        );

        // reorder / drop
        let (mut s, mut o) = pair(KeyUpdatePolicy::default());
        let _f0 = seal(&mut s, b"a");
        let f1 = seal(&mut s, b"b");
        assert_eq!(
            o.open(&f1[4..]),
            Err(ChannelError::UnexpectedSeq {
                expected: 0,
                got: 1
            })
        );

        // a bit flip anywhere after the seq
        for i in 8..(f1.len() - 4) {
            let (mut s, mut o) = pair(KeyUpdatePolicy::default());
            let mut f = seal(&mut s, b"hello");
            f[4 + i] ^= 0x01;
            assert_eq!(o.open(&f[4..]), Err(ChannelError::Forged), "flip at {i}");
        }
        // truncation
        let (mut s, mut o) = pair(KeyUpdatePolicy::default());
        let f = seal(&mut s, b"hello");
        assert_eq!(o.open(&f[4..f.len() - 1]), Err(ChannelError::Forged));
        assert!(matches!(o.open(&f[4..10]), Err(ChannelError::Failed)));
        let (_, mut o) = pair(KeyUpdatePolicy::default());
        assert_eq!(o.open(&f[4..10]), Err(ChannelError::BadFrameLength(6)));
    }

    #[test]
    fn key_update_by_frames_bytes_and_time() {
        let policies = [
            KeyUpdatePolicy {
                max_frames: 3,
                ..Default::default()
            },
            KeyUpdatePolicy {
                max_bytes: 10,
                ..Default::default()
            },
        ];
        for policy in policies {
            let (mut s, mut o) = pair(policy);
            let first_key = *s.current_key().expose();
            let mut updates = 0;
            for i in 0..10u8 {
                let mut out = Vec::new();
                s.seal_data(&[i; 4], 0, &mut out).unwrap();
                for frame in split_frames(&out).unwrap() {
                    match o.open(frame).unwrap() {
                        Inbound::Data(d) => assert_eq!(d, vec![i; 4]),
                        Inbound::KeyUpdate => updates += 1,
                        Inbound::Close | Inbound::Receipt(_) => unreachable!(),
                    }
                }
            }
            assert!(updates >= 2, "{policy:?}: {updates} updates");
            assert_ne!(s.current_key().expose(), &first_key);
        }
        let (mut s, mut o) = pair(KeyUpdatePolicy {
            max_age_ms: 1000,
            ..Default::default()
        });
        let mut out = Vec::new();
        s.seal_data(b"t0", 5_000, &mut out).unwrap();
        s.seal_data(b"t1", 5_999, &mut out).unwrap();
        s.seal_data(b"t2", 6_000, &mut out).unwrap();
        let opened: Vec<_> = split_frames(&out)
            .unwrap()
            .into_iter()
            .map(|f| o.open(f).unwrap())
            .collect();
        assert_eq!(
            opened,
            vec![
                Inbound::Data(b"t0".to_vec()),
                Inbound::Data(b"t1".to_vec()),
                Inbound::KeyUpdate,
                Inbound::Data(b"t2".to_vec())
            ]
        );
        assert_eq!(o.next_seq(), 4, "seq continues across the update");
    }

    #[test]
    fn a_receiver_that_misses_the_update_cannot_open() {
        let (mut s, _) = pair(KeyUpdatePolicy::default());
        let mut out = Vec::new();
        s.seal_key_update(0, &mut out).unwrap();
        s.seal_data(b"x", 0, &mut out).unwrap();
        let frames = split_frames(&out).unwrap();
        // A receiver that has not switched keys (fresh opener at seq 1) fails.
        let ts = Secret::from_slice(&[42u8; 64]).unwrap();
        let mut stale = Opener::new(ts).unwrap();
        stale.seq = 1;
        assert_eq!(stale.open(frames[1]), Err(ChannelError::Forged));
    }

    #[test]
    fn close_is_final_in_both_halves() {
        let (mut s, mut o) = pair(KeyUpdatePolicy::default());
        let mut out = Vec::new();
        s.seal_close(&mut out).unwrap();
        assert_eq!(
            s.seal_data(b"late", 0, &mut Vec::new()),
            Err(ChannelError::Closed)
        );
        assert_eq!(s.seal_close(&mut Vec::new()), Err(ChannelError::Closed));
        assert_eq!(o.open(&out[4..]).unwrap(), Inbound::Close);
        assert!(o.is_closed());
        // A frame after close (forged with the same key, seq 1) is refused.
        let (mut s2, _) = pair(KeyUpdatePolicy::default());
        let mut late = Vec::new();
        s2.seal_data(b"0", 0, &mut late).unwrap();
        late.clear();
        s2.seal_data(b"after close", 0, &mut late).unwrap();
        assert_eq!(o.open(&late[4..]), Err(ChannelError::Closed));
    }

    #[test]
    fn invalid_kinds_and_bodies_are_refused() {
        for (kind, body, expected) in [
            (Kind::KeyUpdate, &b"x"[..], "key update with a body"),
            (Kind::Close, &b"x"[..], "close with a body"),
            (Kind::Receipt, &[0u8; 8][..], "receipt not 9 bytes"),
            (Kind::Receipt, &[0u8; 10][..], "receipt not 9 bytes"),
            (Kind::Receipt, &[][..], "receipt not 9 bytes"),
        ] {
            let (mut s, mut o) = pair(KeyUpdatePolicy::default());
            let mut out = Vec::new();
            s.seal_record(kind, body, &mut out).unwrap();
            assert_eq!(
                o.open(&out[4..]),
                Err(ChannelError::InvalidRecord(expected))
            );
        }
        // Unknown kind 9: seal a data record whose plaintext starts with 9.
        let (mut s, mut o) = pair(KeyUpdatePolicy::default());
        let mut out = Vec::new();
        s.seal_record(Kind::Data, b"", &mut out).unwrap();
        // Re-seal by hand with kind 9.
        let mut pt = vec![9u8];
        let tag = aead::seal_in_place(s_key(&s), &nonce(1), &aad(1), &mut pt).unwrap();
        let mut frame = 1u64.to_be_bytes().to_vec();
        frame.extend_from_slice(&pt);
        frame.extend_from_slice(&tag);
        o.open(&out[4..]).unwrap();
        assert_eq!(
            o.open(&frame),
            Err(ChannelError::InvalidRecord("unknown kind"))
        );
    }

    #[test]
    fn receipts_travel_in_sequence_and_count_towards_key_updates() {
        use crate::receipt::ReceiptStatus;
        let policy = KeyUpdatePolicy {
            max_frames: 2,
            ..KeyUpdatePolicy::default()
        };
        let (mut s, mut o) = pair(policy);
        let receipts = [0u8, 1, 4, 200].map(|b| Receipt {
            message_id: u64::from(b) << 40 | 7,
            status: ReceiptStatus::from_byte(b),
        });
        let mut got = Vec::new();
        for (i, r) in receipts.iter().enumerate() {
            let mut out = Vec::new();
            s.seal_receipt(r, 0, &mut out).unwrap();
            if i == 2 {
                // Two records under the first key: the third comes after
                // a key update, like data.
                assert_eq!(split_frames(&out).unwrap().len(), 2);
            }
            for f in split_frames(&out).unwrap() {
                got.push(o.open(f).unwrap());
            }
        }
        let receipts_got: Vec<Receipt> = got
            .iter()
            .filter_map(|g| match g {
                Inbound::Receipt(r) => Some(*r),
                _ => None,
            })
            .collect();
        assert_eq!(receipts_got, receipts);
        assert!(got.contains(&Inbound::KeyUpdate));
        let mut after_close = Vec::new();
        s.seal_close(&mut after_close).unwrap();
        assert_eq!(
            s.seal_receipt(&receipts[0], 0, &mut Vec::new()),
            Err(ChannelError::Closed)
        );
    }

    fn s_key(s: &Sealer) -> &[u8; 32] {
        s.current_key().expose()
    }
}
