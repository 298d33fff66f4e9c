//! The handshake messages of PROTOCOL.md §5 and their strict codec.
//!
//! Every decoder checks every length against the suite, rejects trailing
//! bytes and never panics; `decode(encode(m)) == m` for every message.

use crate::codec::{ByteReader, Truncated};
use crate::suite::{KEM_CIPHERTEXT_LEN, SIGNATURE_LEN, Suite};

/// Largest handshake message body (fixed by the protocol).
pub const MAX_MESSAGE_LEN: usize = 32768;
/// Most suite ids an Init may list.
pub const MAX_SUITES: usize = 8;
/// Protocol version carried in Init.
pub const VERSION: u8 = 1;

const TYPE_INIT: u8 = 1;
const TYPE_RESP: u8 = 2;
const TYPE_FIN: u8 = 3;
const TYPE_RETRY: u8 = 4;
const TYPE_REJECT: u8 = 5;

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message ended inside a field.
    #[error("message truncated in field `{0}`")]
    Truncated(&'static str),
    /// Bytes followed the last field.
    #[error("{0} trailing bytes after the last field")]
    TrailingBytes(usize),
    /// The body is longer than 32768 bytes.
    #[error("message of {0} bytes exceeds the 32768-byte limit")]
    TooLong(usize),
    /// Another message type was expected here.
    #[error("unexpected message type {got} (expected {expected})")]
    UnexpectedType {
        /// What the state machine accepts here.
        expected: &'static str,
        /// The type byte received.
        got: u8,
    },
    /// Init carried a protocol version this node does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// Init listed no suite or more than 8.
    #[error("suite list of {0} entries (allowed: 1 to 8)")]
    BadSuiteCount(usize),
    /// Init listed a suite id twice.
    #[error("suite id {0:#06x} listed twice")]
    DuplicateSuite(u16),
    /// A suite id whose sizes are needed is not one the protocol defines.
    #[error("unknown suite id {0:#06x}")]
    UnknownSuite(u16),
    /// A length field did not equal the size the suite fixes.
    #[error("field `{field}` has length {got}, the suite requires {expected}")]
    WrongLength {
        /// The field.
        field: &'static str,
        /// The suite's size.
        expected: usize,
        /// The length received.
        got: usize,
    },
}

/// Why a peer rejected the handshake (the Reject message's reason byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// 1: no common suite.
    NoCommonSuite,
    /// 2: refused by policy.
    Policy,
    /// 3: too many concurrent handshakes.
    Busy,
    /// 4: a malformed or unexpected message.
    BadMessage,
    /// 5: a record, signature or MAC failed.
    AuthFailed,
    /// Any other value.
    Unspecified(u8),
}

impl RejectReason {
    /// The reason byte.
    pub fn to_byte(self) -> u8 {
        match self {
            RejectReason::NoCommonSuite => 1,
            RejectReason::Policy => 2,
            RejectReason::Busy => 3,
            RejectReason::BadMessage => 4,
            RejectReason::AuthFailed => 5,
            RejectReason::Unspecified(b) => b,
        }
    }

    /// Reads a reason byte; values without a meaning read as unspecified.
    pub fn from_byte(b: u8) -> Self {
        match b {
            1 => RejectReason::NoCommonSuite,
            2 => RejectReason::Policy,
            3 => RejectReason::Busy,
            4 => RejectReason::BadMessage,
            5 => RejectReason::AuthFailed,
            other => RejectReason::Unspecified(other),
        }
    }

    /// A stable name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::NoCommonSuite => "no-common-suite",
            RejectReason::Policy => "policy",
            RejectReason::Busy => "busy",
            RejectReason::BadMessage => "bad-message",
            RejectReason::AuthFailed => "auth-failed",
            RejectReason::Unspecified(_) => "unspecified",
        }
    }
}

/// Init, I → R.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Init {
    /// The initiator's suite ids in preference order (unknown ids allowed).
    pub suites: Vec<u16>,
    /// The suite of `kem_pk`.
    pub suite: u16,
    /// Ephemeral X25519 public key.
    pub x_pk: [u8; 32],
    /// Ephemeral KEM public key.
    pub kem_pk: Vec<u8>,
    /// The initiator's nonce.
    pub nonce: [u8; 32],
}

/// Resp, R → I.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resp {
    /// The suite (equals Init.suite).
    pub suite: Suite,
    /// Ephemeral X25519 public key.
    pub x_pk: [u8; 32],
    /// KEM ciphertext to Init.kem_pk.
    pub kem_ct: Vec<u8>,
    /// The responder's nonce.
    pub nonce: [u8; 32],
    /// The responder's signed peer record (envelope bytes).
    pub record: Vec<u8>,
    /// Signature over TH1.
    pub sig: Vec<u8>,
    /// HMAC over TH2.
    pub mac: [u8; 32],
}

/// Fin, I → R.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fin {
    /// The initiator's signed peer record (envelope bytes).
    pub record: Vec<u8>,
    /// Signature over TH3.
    pub sig: Vec<u8>,
    /// HMAC over TH4.
    pub mac: [u8; 32],
}

/// Retry, R → I: restart with this suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// The suite to use.
    pub suite: u16,
}

/// Reject, either direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// Why.
    pub reason: RejectReason,
}

/// A message the initiator may receive after Init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToInitiator {
    /// The responder's answer.
    Resp(Resp),
    /// Restart with another suite.
    Retry(Retry),
    /// The responder refused.
    Reject(Reject),
}

/// A message the responder may receive first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstToResponder {
    /// The initiator's opening.
    Init(Init),
    /// The initiator refused (e.g. after a Retry it cannot follow).
    Reject(Reject),
}

/// A message the responder may receive after Resp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondToResponder {
    /// The initiator's confirmation.
    Fin(Fin),
    /// The initiator refused (e.g. the responder's record failed).
    Reject(Reject),
}

/// A reader over a message body of at most [`MAX_MESSAGE_LEN`] bytes.
fn reader(buf: &[u8]) -> Result<ByteReader<'_>, DecodeError> {
    if buf.len() > MAX_MESSAGE_LEN {
        return Err(DecodeError::TooLong(buf.len()));
    }
    Ok(ByteReader::new(buf))
}

/// Every byte of the body was read.
fn finish(r: &ByteReader<'_>) -> Result<(), DecodeError> {
    match r.remaining() {
        0 => Ok(()),
        n => Err(DecodeError::TrailingBytes(n)),
    }
}

impl From<Truncated> for DecodeError {
    fn from(Truncated(field): Truncated) -> Self {
        DecodeError::Truncated(field)
    }
}

fn known_suite(id: u16) -> Result<Suite, DecodeError> {
    Suite::from_id(id).ok_or(DecodeError::UnknownSuite(id))
}

fn expect_len(field: &'static str, expected: usize, got: usize) -> Result<(), DecodeError> {
    if expected == got {
        Ok(())
    } else {
        Err(DecodeError::WrongLength {
            field,
            expected,
            got,
        })
    }
}

impl Init {
    /// Encodes the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(4 + 2 * self.suites.len() + 2 + 32 + 2 + self.kem_pk.len() + 32);
        out.extend_from_slice(&[TYPE_INIT, VERSION, self.suites.len() as u8]);
        for id in &self.suites {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out.extend_from_slice(&self.suite.to_be_bytes());
        out.extend_from_slice(&self.x_pk);
        out.extend_from_slice(&(self.kem_pk.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.kem_pk);
        out.extend_from_slice(&self.nonce);
        out
    }

    fn decode_after_type(r: &mut ByteReader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let n = r.u8("suites")? as usize;
        if !(1..=MAX_SUITES).contains(&n) {
            return Err(DecodeError::BadSuiteCount(n));
        }
        let mut suites = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.u16("suites")?;
            if suites.contains(&id) {
                return Err(DecodeError::DuplicateSuite(id));
            }
            suites.push(id);
        }
        let suite = r.u16("suite")?;
        let x_pk = r.array::<32>("x_pk")?;
        let len = r.u16("kem_pk")? as usize;
        if let Some(known) = Suite::from_id(suite) {
            expect_len("kem_pk", known.kem_public_key_len(), len)?;
        }
        let kem_pk = r.take(len, "kem_pk")?.to_vec();
        let nonce = r.array::<32>("nonce_i")?;
        Ok(Init {
            suites,
            suite,
            x_pk,
            kem_pk,
            nonce,
        })
    }
}

impl Resp {
    /// Encodes the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.th1_len() + 2 + self.sig.len() + 32);
        out.push(TYPE_RESP);
        out.extend_from_slice(&self.suite.id().to_be_bytes());
        out.extend_from_slice(&self.x_pk);
        out.extend_from_slice(&self.kem_ct);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&(self.record.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.record);
        out.extend_from_slice(&(self.sig.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.sig);
        out.extend_from_slice(&self.mac);
        out
    }

    /// Length of the prefix hashed into TH1: from the type byte up to and
    /// including `record_r` with its u32 length.
    pub fn th1_len(&self) -> usize {
        1 + 2 + 32 + self.kem_ct.len() + 32 + 4 + self.record.len()
    }

    fn decode_after_type(r: &mut ByteReader<'_>) -> Result<Self, DecodeError> {
        let suite = known_suite(r.u16("suite")?)?;
        let x_pk = r.array::<32>("x_pk")?;
        let kem_ct = r.take(suite.kem_ciphertext_len(), "kem_ct")?.to_vec();
        let nonce = r.array::<32>("nonce_r")?;
        let record_len = r.u32("record_r")? as usize;
        let record = r.take(record_len, "record_r")?.to_vec();
        let sig_len = r.u16("sig_r")? as usize;
        expect_len("sig_r", suite.signature_len(), sig_len)?;
        let sig = r.take(sig_len, "sig_r")?.to_vec();
        let mac = r.array::<32>("mac_r")?;
        Ok(Resp {
            suite,
            x_pk,
            kem_ct,
            nonce,
            record,
            sig,
            mac,
        })
    }
}

impl Fin {
    /// Encodes the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.th3_len() + 2 + self.sig.len() + 32);
        out.push(TYPE_FIN);
        out.extend_from_slice(&(self.record.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.record);
        out.extend_from_slice(&(self.sig.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.sig);
        out.extend_from_slice(&self.mac);
        out
    }

    /// Length of the prefix hashed into TH3: from the type byte up to and
    /// including `record_i` with its u32 length.
    pub fn th3_len(&self) -> usize {
        1 + 4 + self.record.len()
    }

    fn decode_after_type(r: &mut ByteReader<'_>, suite: Suite) -> Result<Self, DecodeError> {
        let record_len = r.u32("record_i")? as usize;
        let record = r.take(record_len, "record_i")?.to_vec();
        let sig_len = r.u16("sig_i")? as usize;
        expect_len("sig_i", suite.signature_len(), sig_len)?;
        let sig = r.take(sig_len, "sig_i")?.to_vec();
        let mac = r.array::<32>("mac_i")?;
        Ok(Fin { record, sig, mac })
    }
}

impl Retry {
    /// Encodes the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![TYPE_RETRY];
        out.extend_from_slice(&self.suite.to_be_bytes());
        out
    }
}

impl Reject {
    /// Encodes the body.
    pub fn encode(&self) -> Vec<u8> {
        vec![TYPE_REJECT, self.reason.to_byte()]
    }
}

fn decode_reject(r: &mut ByteReader<'_>) -> Result<Reject, DecodeError> {
    Ok(Reject {
        reason: RejectReason::from_byte(r.u8("reason")?),
    })
}

impl ToInitiator {
    /// Decodes what a responder sent after Init.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = reader(buf)?;
        let msg = match r.u8("type")? {
            TYPE_RESP => ToInitiator::Resp(Resp::decode_after_type(&mut r)?),
            TYPE_RETRY => ToInitiator::Retry(Retry {
                suite: r.u16("suite")?,
            }),
            TYPE_REJECT => ToInitiator::Reject(decode_reject(&mut r)?),
            got => {
                return Err(DecodeError::UnexpectedType {
                    expected: "Resp, Retry or Reject",
                    got,
                });
            }
        };
        finish(&r)?;
        Ok(msg)
    }
}

impl FirstToResponder {
    /// Decodes the initiator's first message.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = reader(buf)?;
        let msg = match r.u8("type")? {
            TYPE_INIT => FirstToResponder::Init(Init::decode_after_type(&mut r)?),
            TYPE_REJECT => FirstToResponder::Reject(decode_reject(&mut r)?),
            got => {
                return Err(DecodeError::UnexpectedType {
                    expected: "Init or Reject",
                    got,
                });
            }
        };
        finish(&r)?;
        Ok(msg)
    }
}

impl SecondToResponder {
    /// Decodes the initiator's answer to Resp, for the negotiated `suite`.
    pub fn decode(buf: &[u8], suite: Suite) -> Result<Self, DecodeError> {
        let mut r = reader(buf)?;
        let msg = match r.u8("type")? {
            TYPE_FIN => SecondToResponder::Fin(Fin::decode_after_type(&mut r, suite)?),
            TYPE_REJECT => SecondToResponder::Reject(decode_reject(&mut r)?),
            got => {
                return Err(DecodeError::UnexpectedType {
                    expected: "Fin or Reject",
                    got,
                });
            }
        };
        finish(&r)?;
        Ok(msg)
    }
}

/// Prepends the u32 length that frames every handshake message on the stream.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Checks a frame's u32 length before the body is read: at most 32768.
pub fn frame_len(header: [u8; 4]) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_MESSAGE_LEN {
        Err(DecodeError::TooLong(len))
    } else {
        Ok(len)
    }
}

// Keep the field-size constants honest: Resp and Fin sizes come from the suite.
const _: () = assert!(KEM_CIPHERTEXT_LEN == 1568 && SIGNATURE_LEN == 4627);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn init(suite: Suite) -> Init {
        Init {
            suites: vec![1, 2, 0x7777],
            suite: suite.id(),
            x_pk: [1; 32],
            kem_pk: vec![2; suite.kem_public_key_len()],
            nonce: [3; 32],
        }
    }

    fn resp(suite: Suite) -> Resp {
        Resp {
            suite,
            x_pk: [4; 32],
            kem_ct: vec![5; suite.kem_ciphertext_len()],
            nonce: [6; 32],
            record: vec![7; 300],
            sig: vec![8; suite.signature_len()],
            mac: [9; 32],
        }
    }

    #[test]
    fn round_trips() {
        for suite in Suite::ALL {
            let i = init(suite);
            assert_eq!(
                FirstToResponder::decode(&i.encode()),
                Ok(FirstToResponder::Init(i))
            );
            let r = resp(suite);
            assert_eq!(ToInitiator::decode(&r.encode()), Ok(ToInitiator::Resp(r)));
            let f = Fin {
                record: vec![1; 10],
                sig: vec![2; suite.signature_len()],
                mac: [3; 32],
            };
            assert_eq!(
                SecondToResponder::decode(&f.encode(), suite),
                Ok(SecondToResponder::Fin(f))
            );
        }
        let retry = Retry { suite: 2 };
        assert_eq!(
            ToInitiator::decode(&retry.encode()),
            Ok(ToInitiator::Retry(retry))
        );
        for b in 0..=255u8 {
            let rej = Reject {
                reason: RejectReason::from_byte(b),
            };
            assert_eq!(rej.reason.to_byte(), b);
            assert_eq!(
                ToInitiator::decode(&rej.encode()),
                Ok(ToInitiator::Reject(rej))
            );
        }
    }

    #[test]
    fn init_for_an_unknown_suite_is_still_parsed() {
        let i = Init {
            suites: vec![9, 2],
            suite: 9,
            x_pk: [0; 32],
            kem_pk: vec![1; 17],
            nonce: [0; 32],
        };
        assert_eq!(
            FirstToResponder::decode(&i.encode()),
            Ok(FirstToResponder::Init(i))
        );
    }

    #[test]
    fn strictness() {
        let suite = Suite::Kyber1024Dilithium5;
        let mut i = init(suite);
        i.kem_pk.pop();
        assert!(matches!(
            FirstToResponder::decode(&i.encode()),
            Err(DecodeError::WrongLength {
                field: "kem_pk",
                ..
            })
        ));
        let mut bytes = init(suite).encode();
        bytes.push(0);
        assert_eq!(
            FirstToResponder::decode(&bytes),
            Err(DecodeError::TrailingBytes(1))
        );
        let mut bytes = init(suite).encode();
        bytes[1] = 2;
        assert_eq!(
            FirstToResponder::decode(&bytes),
            Err(DecodeError::UnsupportedVersion(2))
        );
        let dup = Init {
            suites: vec![1, 1],
            ..init(suite)
        };
        assert_eq!(
            FirstToResponder::decode(&dup.encode()),
            Err(DecodeError::DuplicateSuite(1))
        );
        let none = Init {
            suites: vec![],
            ..init(suite)
        };
        assert_eq!(
            FirstToResponder::decode(&none.encode()),
            Err(DecodeError::BadSuiteCount(0))
        );
        let nine = Init {
            suites: (1..=9).collect(),
            ..init(suite)
        };
        assert_eq!(
            FirstToResponder::decode(&nine.encode()),
            Err(DecodeError::BadSuiteCount(9))
        );
        let mut r = resp(suite);
        r.sig.push(0);
        assert!(matches!(
            ToInitiator::decode(&r.encode()),
            Err(DecodeError::WrongLength { field: "sig_r", .. })
        ));
        let mut bytes = resp(suite).encode();
        bytes[2] = 9; // suite id 0x0009
        assert_eq!(
            ToInitiator::decode(&bytes),
            Err(DecodeError::UnknownSuite(9))
        );
        assert!(matches!(
            ToInitiator::decode(&[1]),
            Err(DecodeError::UnexpectedType { got: 1, .. })
        ));
        assert!(matches!(
            FirstToResponder::decode(&[3]),
            Err(DecodeError::UnexpectedType { got: 3, .. })
        ));
        assert_eq!(
            ToInitiator::decode(&[]),
            Err(DecodeError::Truncated("type"))
        );
        assert_eq!(
            ToInitiator::decode(&vec![2; MAX_MESSAGE_LEN + 1]),
            Err(DecodeError::TooLong(MAX_MESSAGE_LEN + 1))
        );
        assert_eq!(
            frame_len((MAX_MESSAGE_LEN as u32 + 1).to_be_bytes()),
            Err(DecodeError::TooLong(32769))
        );
        assert_eq!(frame_len(5u32.to_be_bytes()), Ok(5));
    }

    #[test]
    fn truncation_at_every_offset_is_an_error() {
        for suite in Suite::ALL {
            let bytes = resp(suite).encode();
            for cut in 0..bytes.len() {
                assert!(ToInitiator::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let bytes = init(suite).encode();
            for cut in 0..bytes.len() {
                assert!(
                    FirstToResponder::decode(&bytes[..cut]).is_err(),
                    "cut at {cut}"
                );
            }
            let bytes = Fin {
                record: vec![1; 10],
                sig: vec![2; suite.signature_len()],
                mac: [3; 32],
            }
            .encode();
            for cut in 0..bytes.len() {
                assert!(
                    SecondToResponder::decode(&bytes[..cut], suite).is_err(),
                    "cut at {cut}"
                );
            }
        }
    }

    fn arb_suite() -> impl Strategy<Value = Suite> {
        prop_oneof![
            Just(Suite::Kyber1024Dilithium5),
            Just(Suite::Mlkem1024Mldsa87)
        ]
    }

    proptest! {
        #[test]
        fn init_round_trip(
            suites in proptest::collection::hash_set(any::<u16>(), 1..=8),
            suite in arb_suite(),
            x_pk in any::<[u8; 32]>(),
            nonce in any::<[u8; 32]>(),
            fill in any::<u8>(),
        ) {
            let i = Init {
                suites: suites.into_iter().collect(),
                suite: suite.id(),
                x_pk,
                kem_pk: vec![fill; suite.kem_public_key_len()],
                nonce,
            };
            prop_assert_eq!(FirstToResponder::decode(&i.encode()), Ok(FirstToResponder::Init(i)));
        }

        #[test]
        fn resp_and_fin_round_trip(
            suite in arb_suite(),
            record in proptest::collection::vec(any::<u8>(), 0..2000),
            x_pk in any::<[u8; 32]>(),
            mac in any::<[u8; 32]>(),
        ) {
            let r = Resp { record: record.clone(), x_pk, mac, ..resp(suite) };
            prop_assert_eq!(ToInitiator::decode(&r.encode()), Ok(ToInitiator::Resp(r)));
            let f = Fin { record, sig: vec![1; suite.signature_len()], mac };
            prop_assert_eq!(SecondToResponder::decode(&f.encode(), suite), Ok(SecondToResponder::Fin(f)));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..12000), suite in arb_suite()) {
            let _ = ToInitiator::decode(&bytes);
            let _ = FirstToResponder::decode(&bytes);
            let _ = SecondToResponder::decode(&bytes, suite);
        }

        #[test]
        fn typed_prefixes_never_panic(t in 1u8..=5, rest in proptest::collection::vec(any::<u8>(), 0..7000), suite in arb_suite()) {
            let mut bytes = vec![t];
            bytes.extend(rest);
            let _ = ToInitiator::decode(&bytes);
            let _ = FirstToResponder::decode(&bytes);
            let _ = SecondToResponder::decode(&bytes, suite);
        }
    }
}
