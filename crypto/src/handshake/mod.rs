//! The PQ handshake of PROTOCOL.md §5 as sans-IO typestates.
//!
//! Each state's `handle` consumes the state and returns the next one (or the
//! finished session) together with the bytes to send, or a typed error that
//! says which Reject to send. No state can be used twice, and no session key
//! exists before the whole transcript, `sig_i` and `mac_i` included, verified.
//!
//! ```text
//! Initiator::start ──Init──▶ Responder::start(..).handle
//!        ◀──Retry (at most once) / Resp──
//! InitiatorAwaitingResp::handle ──Fin──▶ ResponderAwaitingFin::handle
//!        └─▶ Established                         └─▶ Established
//! ```

pub mod messages;
mod transcript;

use std::fmt;
use std::sync::Arc;

use rand_core::CryptoRng;
use subtle::ConstantTimeEq;

use crate::channel::{Channel, KeyUpdatePolicy};
use crate::error::CryptoError;
use crate::hybrid::{self, KeySchedule, X25519Secret};
use crate::kem::{self, KemCiphertext, KemPublicKey, KemSecretKey};
use crate::secret::Secret;
use crate::sign::{SigningKey, VerifyingKey};
use crate::suite::Suite;

pub use messages::{DecodeError, RejectReason};
use messages::{Fin, FirstToResponder, Init, Reject, Resp, Retry, SecondToResponder, ToInitiator};
pub use transcript::{Transcript, prologue, prologue_after_retry};

const LABEL_RESP: &[u8] = b"pqnode-hs-resp-v1";
const LABEL_FIN: &[u8] = b"pqnode-hs-fin-v1";

/// One suite this node can speak: its signing key and its signed record.
pub struct Credential {
    /// The suite's signing key (the record's `sig_pk` is its public half).
    pub signing_key: Arc<SigningKey>,
    /// The signed peer record (envelope bytes) published for this key.
    pub record: Vec<u8>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("suite", &self.signing_key.suite())
            .field("record_len", &self.record.len())
            .finish()
    }
}

/// What a node brings to every handshake.
#[derive(Debug)]
pub struct HandshakeConfig {
    /// This node's PeerId (multihash bytes), as Noise authenticates it.
    pub local_peer_id: Vec<u8>,
    /// One credential per enabled suite, in preference order (at most 8).
    pub credentials: Vec<Credential>,
    /// When the record layer updates its keys.
    pub key_update: KeyUpdatePolicy,
}

impl HandshakeConfig {
    fn credential(&self, suite: Suite) -> Option<&Credential> {
        self.credentials
            .iter()
            .find(|c| c.signing_key.suite() == suite)
    }

    fn enabled(&self) -> impl Iterator<Item = Suite> + '_ {
        self.credentials.iter().map(|c| c.signing_key.suite())
    }
}

/// Why the caller's record verifier refused a peer record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer record rejected: {reason}")]
pub struct RecordRejected {
    /// The error name of PROTOCOL.md §4 (e.g. `peer-id-mismatch`).
    pub reason: String,
}

/// Checks a peer's signed record (PROTOCOL.md §4) for the handshake.
pub trait RecordVerifier {
    /// Verifies `record` as issued by `peer_id` (the Noise-authenticated
    /// PeerId) for `suite`, and returns the signature key it publishes.
    fn verify_record(
        &self,
        record: &[u8],
        peer_id: &[u8],
        suite: Suite,
    ) -> Result<VerifyingKey, RecordRejected>;
}

/// A handshake failure. [`HandshakeError::reject_reason`] says what to send.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A message could not be decoded.
    #[error("malformed handshake message: {0}")]
    Decode(#[from] DecodeError),
    /// The peer sent Reject.
    #[error("peer rejected the handshake: {}", .0.name())]
    Rejected(RejectReason),
    /// No suite in common.
    #[error("no common suite (peer offers {offered:?})")]
    NoCommonSuite {
        /// The ids the peer listed.
        offered: Vec<u16>,
    },
    /// A message broke the protocol's rules (wrong suite, bad Retry, ...).
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// Toward a pinned peer only its pinned suites are offered (§5 rev 3):
    /// a Retry to another suite this node enables is `key-mismatch`, never
    /// a way to reach the peer under a key nobody pinned.
    #[error(
        "the peer asked to retry with suite {suite:#06x}, which it is not pinned under (key-mismatch)"
    )]
    UnpinnedSuite {
        /// The suite id the Retry named.
        suite: u16,
    },
    /// The peer's record was refused by the verifier.
    #[error(transparent)]
    Record(#[from] RecordRejected),
    /// The transcript signature did not verify.
    #[error("transcript signature invalid")]
    BadSignature,
    /// The confirmation MAC did not match.
    #[error("confirmation MAC invalid")]
    BadMac,
    /// The peer's X25519 key gave an all-zero secret.
    #[error("peer X25519 key is of low order")]
    LowOrderKey,
    /// A local primitive failed or a local input was invalid.
    #[error("local failure: {0}")]
    Local(#[from] CryptoError),
}

impl HandshakeError {
    /// The Reject to send to the peer, if any (never after the peer's own
    /// Reject). What is sent stays coarse; logs get the full error.
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            HandshakeError::Rejected(_) => None,
            HandshakeError::NoCommonSuite { .. } => Some(RejectReason::NoCommonSuite),
            HandshakeError::Decode(_)
            | HandshakeError::Protocol(_)
            | HandshakeError::LowOrderKey => Some(RejectReason::BadMessage),
            HandshakeError::Record(_)
            | HandshakeError::UnpinnedSuite { .. }
            | HandshakeError::BadSignature
            | HandshakeError::BadMac => Some(RejectReason::AuthFailed),
            HandshakeError::Local(_) => Some(RejectReason::Unspecified(0)),
        }
    }

    /// A stable, low-cardinality name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            HandshakeError::Decode(_) => "decode",
            HandshakeError::Rejected(_) => "rejected-by-peer",
            HandshakeError::NoCommonSuite { .. } => "no-common-suite",
            HandshakeError::Protocol(_) => "protocol",
            HandshakeError::UnpinnedSuite { .. } => "unpinned-suite",
            HandshakeError::Record(_) => "record",
            HandshakeError::BadSignature => "signature",
            HandshakeError::BadMac => "mac",
            HandshakeError::LowOrderKey => "low-order-key",
            HandshakeError::Local(_) => "local",
        }
    }
}

/// Encodes a Reject message body.
pub fn reject_message(reason: RejectReason) -> Vec<u8> {
    Reject { reason }.encode()
}

/// A finished handshake: the peer's authenticated key and the record layer.
pub struct Established {
    /// The negotiated suite.
    pub suite: Suite,
    /// The peer's PQ signature key, as its verified record published it.
    pub peer_key: VerifyingKey,
    /// The peer's record (envelope bytes), verified.
    pub peer_record: Vec<u8>,
    /// TH4, the hash of the whole transcript.
    pub transcript_hash: [u8; 64],
    /// The record layer, keyed for this side's direction.
    pub channel: Channel,
}

impl fmt::Debug for Established {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Established")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

/// The initiator's ephemeral secrets for one Init. Production code lets
/// [`Initiator::start`] make them; test vectors supply their own.
pub struct Ephemeral {
    /// X25519 secret (raw, before clamping).
    pub x_sk: X25519Secret,
    /// KEM public key.
    pub kem_pk: KemPublicKey,
    /// KEM secret key.
    pub kem_sk: KemSecretKey,
    /// The nonce.
    pub nonce: [u8; 32],
}

impl Ephemeral {
    /// Fresh ephemeral keys for `suite`.
    pub fn generate<R: CryptoRng + ?Sized>(suite: Suite, rng: &mut R) -> Result<Self, CryptoError> {
        let (kem_pk, kem_sk) = kem::generate_keypair(suite)?;
        let x_sk = X25519Secret::random(rng);
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        Ok(Ephemeral {
            x_sk,
            kem_pk,
            kem_sk,
            nonce,
        })
    }
}

impl fmt::Debug for Ephemeral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ephemeral")
            .field("suite", &self.kem_pk.suite())
            .finish_non_exhaustive()
    }
}

/// Entry point of the side that opened the stream.
pub struct Initiator;

/// The initiator after sending Init.
pub struct InitiatorAwaitingResp {
    config: Arc<HandshakeConfig>,
    remote_peer_id: Vec<u8>,
    prologue: Vec<u8>,
    init: Vec<u8>,
    suites: Vec<u16>,
    suite: Suite,
    ephemeral: Ephemeral,
    retried: bool,
}

/// What the initiator does after the responder's answer.
pub enum InitiatorStep {
    /// The responder asked for another suite: send `init` and wait again.
    Retry {
        /// The new state.
        state: InitiatorAwaitingResp,
        /// The new Init body to send.
        init: Vec<u8>,
    },
    /// Send `fin`; the session is established.
    Done {
        /// The Fin body to send.
        fin: Vec<u8>,
        /// The session.
        session: Box<Established>,
    },
}

impl Initiator {
    /// Starts a handshake with `remote_peer_id` using the first enabled
    /// suite; returns the state and the Init body to send.
    pub fn start<R: CryptoRng + ?Sized>(
        config: Arc<HandshakeConfig>,
        remote_peer_id: &[u8],
        rng: &mut R,
    ) -> Result<(InitiatorAwaitingResp, Vec<u8>), HandshakeError> {
        let all: Vec<Suite> = config.enabled().collect();
        Self::start_offering(config, remote_peer_id, &all, rng)
    }

    /// [`Initiator::start`] offering only the enabled suites that are also
    /// in `offer`, in this node's order (PROTOCOL.md §5 rev 3: toward a
    /// pinned peer, only its pinned suites). An empty intersection is an
    /// error.
    pub fn start_offering<R: CryptoRng + ?Sized>(
        config: Arc<HandshakeConfig>,
        remote_peer_id: &[u8],
        offer: &[Suite],
        rng: &mut R,
    ) -> Result<(InitiatorAwaitingResp, Vec<u8>), HandshakeError> {
        let suites: Vec<u16> = config
            .enabled()
            .filter(|s| offer.contains(s))
            .map(Suite::id)
            .collect();
        let first = suites
            .first()
            .and_then(|id| Suite::from_id(*id))
            .ok_or(HandshakeError::Protocol("no suite to offer"))?;
        let ephemeral = Ephemeral::generate(first, rng)?;
        Self::start_listing(config, remote_peer_id, suites, ephemeral)
    }

    /// [`Initiator::start`] with caller-supplied ephemeral secrets (replay
    /// test vectors); `ephemeral` must be for the first enabled suite.
    pub fn start_with(
        config: Arc<HandshakeConfig>,
        remote_peer_id: &[u8],
        ephemeral: Ephemeral,
    ) -> Result<(InitiatorAwaitingResp, Vec<u8>), HandshakeError> {
        let suites: Vec<u16> = config.enabled().map(Suite::id).collect();
        Self::start_listing(config, remote_peer_id, suites, ephemeral)
    }

    fn start_listing(
        config: Arc<HandshakeConfig>,
        remote_peer_id: &[u8],
        suites: Vec<u16>,
        ephemeral: Ephemeral,
    ) -> Result<(InitiatorAwaitingResp, Vec<u8>), HandshakeError> {
        if suites.is_empty() || suites.len() > messages::MAX_SUITES {
            return Err(HandshakeError::Protocol(
                "1 to 8 suites must be enabled locally",
            ));
        }
        let suite = ephemeral.kem_pk.suite();
        if Some(suite.id()) != suites.first().copied() {
            return Err(HandshakeError::Protocol(
                "ephemeral key is not for the first offered suite",
            ));
        }
        let prologue = prologue(&config.local_peer_id, remote_peer_id)?;
        let init = encode_init(&suites, &ephemeral);
        let state = InitiatorAwaitingResp {
            remote_peer_id: remote_peer_id.to_vec(),
            prologue,
            init: init.clone(),
            suites,
            suite,
            ephemeral,
            retried: false,
            config,
        };
        Ok((state, init))
    }
}

fn encode_init(suites: &[u16], eph: &Ephemeral) -> Vec<u8> {
    Init {
        suites: suites.to_vec(),
        suite: eph.kem_pk.suite().id(),
        x_pk: hybrid::x25519_public(&eph.x_sk),
        kem_pk: eph.kem_pk.as_bytes().to_vec(),
        nonce: eph.nonce,
    }
    .encode()
}

fn x25519_checked(sk: &X25519Secret, pk: &[u8; 32]) -> Result<Secret<32>, HandshakeError> {
    hybrid::x25519(sk, pk).map_err(|e| match e {
        CryptoError::X25519AllZero => HandshakeError::LowOrderKey,
        other => HandshakeError::Local(other),
    })
}

fn verify_mac(key: &Secret<32>, th: &[u8; 64], mac: &[u8; 32]) -> Result<(), HandshakeError> {
    let expected = hybrid::hmac_sha512_256(key.expose(), th);
    if bool::from(expected.ct_eq(mac)) {
        Ok(())
    } else {
        Err(HandshakeError::BadMac)
    }
}

fn signed_message(label: &[u8], th: &[u8; 64]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(label.len() + 64);
    msg.extend_from_slice(label);
    msg.extend_from_slice(th);
    msg
}

fn verified_key(
    verifier: &dyn RecordVerifier,
    record: &[u8],
    peer_id: &[u8],
    suite: Suite,
) -> Result<VerifyingKey, HandshakeError> {
    let key = verifier.verify_record(record, peer_id, suite)?;
    if key.suite() != suite {
        return Err(RecordRejected {
            reason: "suite-mismatch".into(),
        }
        .into());
    }
    Ok(key)
}

impl InitiatorAwaitingResp {
    /// The suite of the Init in flight.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The ephemeral secrets of the Init in flight. Only for replay test
    /// vectors (PROTOCOL.md Appendix A), which must record them; nothing
    /// else has a reason to read them.
    pub fn ephemeral_for_test_vectors(&self) -> &Ephemeral {
        &self.ephemeral
    }

    /// Handles the responder's answer (a message body without its u32 length).
    pub fn handle<R: CryptoRng + ?Sized>(
        self,
        msg: &[u8],
        verifier: &dyn RecordVerifier,
        rng: &mut R,
    ) -> Result<InitiatorStep, HandshakeError> {
        match ToInitiator::decode(msg)? {
            ToInitiator::Reject(r) => Err(HandshakeError::Rejected(r.reason)),
            ToInitiator::Retry(retry) => self.retry(msg, retry, rng),
            ToInitiator::Resp(resp) => self.finish(msg, resp, verifier),
        }
    }

    fn retry<R: CryptoRng + ?Sized>(
        self,
        retry_bytes: &[u8],
        retry: Retry,
        rng: &mut R,
    ) -> Result<InitiatorStep, HandshakeError> {
        if self.retried {
            return Err(HandshakeError::Protocol("second Retry"));
        }
        if retry.suite != self.suite.id()
            && !self.suites.contains(&retry.suite)
            && self.config.enabled().any(|s| s.id() == retry.suite)
        {
            // Enabled here but not offered: left out because the peer is
            // pinned under other suites only.
            return Err(HandshakeError::UnpinnedSuite { suite: retry.suite });
        }
        if retry.suite == self.suite.id() || !self.suites.contains(&retry.suite) {
            return Err(HandshakeError::Protocol(
                "Retry names a suite that was not offered or was already tried",
            ));
        }
        let suite = Suite::from_id(retry.suite)
            .ok_or(HandshakeError::Protocol("Retry names an unknown suite"))?;
        let ephemeral = Ephemeral::generate(suite, rng)?;
        let prologue = prologue_after_retry(&self.prologue, &self.init, retry_bytes);
        let init = encode_init(&self.suites, &ephemeral);
        Ok(InitiatorStep::Retry {
            init: init.clone(),
            state: InitiatorAwaitingResp {
                prologue,
                init,
                suite,
                ephemeral,
                retried: true,
                ..self
            },
        })
    }

    fn finish(
        self,
        resp_bytes: &[u8],
        resp: Resp,
        verifier: &dyn RecordVerifier,
    ) -> Result<InitiatorStep, HandshakeError> {
        let suite = self.suite;
        if resp.suite != suite {
            return Err(HandshakeError::Protocol(
                "Resp suite differs from Init suite",
            ));
        }
        let credential = self
            .config
            .credential(suite)
            .ok_or(HandshakeError::Protocol("suite not enabled locally"))?;
        let mut transcript = Transcript::new(&self.prologue);
        let th1 = transcript.th1(&self.init, &resp_bytes[..resp.th1_len()]);
        let ct = KemCiphertext::from_bytes(suite, &resp.kem_ct)?;
        let ss_kem = self.ephemeral.kem_sk.decapsulate(&ct)?;
        let ss_x = x25519_checked(&self.ephemeral.x_sk, &resp.x_pk)?;
        let schedule = KeySchedule::new(&th1, &ss_kem, &ss_x);
        drop((ss_kem, ss_x, self.ephemeral));

        // Cheap checks first: the MAC proves the peer holds the secrets, then
        // the record and the signature prove who it is.
        let th1_end = resp.th1_len();
        let sig_end = resp_bytes.len() - 32;
        let th2 = transcript.th2(&resp_bytes[th1_end..sig_end]);
        verify_mac(&schedule.conf_r()?, &th2, &resp.mac)?;
        let peer_key = verified_key(verifier, &resp.record, &self.remote_peer_id, suite)?;
        peer_key
            .verify(&signed_message(LABEL_RESP, &th1), &resp.sig)
            .map_err(|_| HandshakeError::BadSignature)?;

        // Fin.
        let mut fin = Fin {
            record: credential.record.clone(),
            sig: Vec::new(),
            mac: [0; 32],
        };
        let mut fin_bytes = fin.encode();
        let th3 = transcript.th3(&resp.mac, &fin_bytes[..fin.th3_len()]);
        fin.sig = credential
            .signing_key
            .sign(&signed_message(LABEL_FIN, &th3))?;
        fin_bytes = fin.encode();
        let th3_end = fin.th3_len();
        let th4 = transcript.th4(&fin_bytes[th3_end..fin_bytes.len() - 32]);
        fin.mac = hybrid::hmac_sha512_256(schedule.conf_i()?.expose(), &th4);
        let fin_bytes = fin.encode();

        let (i2r, r2i) = schedule.traffic_secrets(&th4)?;
        let channel = Channel::new(i2r, r2i, self.config.key_update)?;
        Ok(InitiatorStep::Done {
            fin: fin_bytes,
            session: Box::new(Established {
                suite,
                peer_key,
                peer_record: resp.record,
                transcript_hash: th4,
                channel,
            }),
        })
    }
}

/// Entry point of the side that accepted the stream.
pub struct Responder;

/// The responder waiting for Init (the first one, or the one after Retry).
pub struct ResponderAwaitingInit {
    config: Arc<HandshakeConfig>,
    remote_peer_id: Vec<u8>,
    prologue: Vec<u8>,
    /// The suites this initiator may use (`None`: every enabled suite).
    allowed: Option<Vec<Suite>>,
    /// After a Retry: the initiator's suite list and the suite it must use.
    retried: Option<(Vec<u16>, Suite)>,
}

/// The responder after sending Resp.
pub struct ResponderAwaitingFin {
    config: Arc<HandshakeConfig>,
    remote_peer_id: Vec<u8>,
    suite: Suite,
    transcript: Transcript,
    schedule: KeySchedule,
}

/// What the responder does with an Init.
pub enum ResponderStep {
    /// Send `retry` and wait for a new Init.
    Retry {
        /// The new state.
        state: ResponderAwaitingInit,
        /// The Retry body to send.
        retry: Vec<u8>,
    },
    /// Send `resp` and wait for Fin.
    Resp {
        /// The new state.
        state: Box<ResponderAwaitingFin>,
        /// The Resp body to send.
        resp: Vec<u8>,
    },
}

impl Responder {
    /// Starts responding to a stream from `remote_peer_id`.
    pub fn start(
        config: Arc<HandshakeConfig>,
        remote_peer_id: &[u8],
    ) -> Result<ResponderAwaitingInit, HandshakeError> {
        Self::start_allowing(config, remote_peer_id, None)
    }

    /// [`Responder::start`] treating every enabled suite outside `allowed`
    /// as not enabled for this initiator (PROTOCOL.md §5 rev 3: a pinned
    /// initiator may only use its pinned suites, so Retry and Reject 1
    /// follow from those alone). `None` allows every enabled suite.
    pub fn start_allowing(
        config: Arc<HandshakeConfig>,
        remote_peer_id: &[u8],
        allowed: Option<Vec<Suite>>,
    ) -> Result<ResponderAwaitingInit, HandshakeError> {
        let prologue = prologue(remote_peer_id, &config.local_peer_id)?;
        Ok(ResponderAwaitingInit {
            config,
            remote_peer_id: remote_peer_id.to_vec(),
            prologue,
            allowed,
            retried: None,
        })
    }
}

impl ResponderAwaitingInit {
    /// Handles an Init body.
    pub fn handle<R: CryptoRng + ?Sized>(
        self,
        msg: &[u8],
        rng: &mut R,
    ) -> Result<ResponderStep, HandshakeError> {
        let init = match FirstToResponder::decode(msg)? {
            FirstToResponder::Reject(r) => return Err(HandshakeError::Rejected(r.reason)),
            FirstToResponder::Init(init) => init,
        };
        if let Some((suites, suite)) = &self.retried {
            if &init.suites != suites || init.suite != suite.id() {
                return Err(HandshakeError::Protocol(
                    "Init after Retry changed the suite list or ignored the Retry",
                ));
            }
        } else if init.suites.first() != Some(&init.suite) {
            return Err(HandshakeError::Protocol(
                "first Init's suite is not its first listed suite",
            ));
        }
        let allowed = |s: &Suite| self.allowed.as_ref().is_none_or(|a| a.contains(s));
        let enabled = |id: u16| {
            Suite::from_id(id)
                .filter(allowed)
                .and_then(|s| self.config.credential(s).map(|_| s))
        };
        let Some(suite) = enabled(init.suite) else {
            if self.retried.is_some() {
                return Err(HandshakeError::Protocol(
                    "Init after Retry for a suite not enabled",
                ));
            }
            let Some(choice) = init.suites.iter().copied().find_map(enabled) else {
                return Err(HandshakeError::NoCommonSuite {
                    offered: init.suites,
                });
            };
            let retry = Retry { suite: choice.id() }.encode();
            let prologue = prologue_after_retry(&self.prologue, msg, &retry);
            return Ok(ResponderStep::Retry {
                state: ResponderAwaitingInit {
                    prologue,
                    retried: Some((init.suites, choice)),
                    ..self
                },
                retry,
            });
        };
        self.respond(msg, init, suite, rng)
    }

    fn respond<R: CryptoRng + ?Sized>(
        self,
        init_bytes: &[u8],
        init: Init,
        suite: Suite,
        rng: &mut R,
    ) -> Result<ResponderStep, HandshakeError> {
        let credential = self
            .config
            .credential(suite)
            .ok_or(HandshakeError::Protocol("suite not enabled locally"))?;
        let kem_pk = KemPublicKey::from_bytes(suite, &init.kem_pk)
            .map_err(|_| HandshakeError::Protocol("Init carries an invalid KEM public key"))?;
        let x_sk = X25519Secret::random(rng);
        let ss_x = x25519_checked(&x_sk, &init.x_pk)?;
        let (ct, ss_kem) = kem_pk.encapsulate()?;
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        let mut resp = Resp {
            suite,
            x_pk: hybrid::x25519_public(&x_sk),
            kem_ct: ct.as_bytes().to_vec(),
            nonce,
            record: credential.record.clone(),
            sig: Vec::new(),
            mac: [0; 32],
        };
        drop(x_sk);
        let mut transcript = Transcript::new(&self.prologue);
        let resp_prefix = resp.encode();
        let th1 = transcript.th1(init_bytes, &resp_prefix[..resp.th1_len()]);
        let schedule = KeySchedule::new(&th1, &ss_kem, &ss_x);
        drop((ss_kem, ss_x));
        resp.sig = credential
            .signing_key
            .sign(&signed_message(LABEL_RESP, &th1))?;
        let with_sig = resp.encode();
        let th2 = transcript.th2(&with_sig[resp.th1_len()..with_sig.len() - 32]);
        resp.mac = hybrid::hmac_sha512_256(schedule.conf_r()?.expose(), &th2);
        transcript.absorb_mac(&resp.mac);
        let resp_bytes = resp.encode();
        Ok(ResponderStep::Resp {
            state: Box::new(ResponderAwaitingFin {
                config: self.config,
                remote_peer_id: self.remote_peer_id,
                suite,
                transcript,
                schedule,
            }),
            resp: resp_bytes,
        })
    }
}

impl ResponderAwaitingFin {
    /// The negotiated suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Handles Fin and establishes the session.
    pub fn handle(
        mut self,
        msg: &[u8],
        verifier: &dyn RecordVerifier,
    ) -> Result<Established, HandshakeError> {
        let fin = match SecondToResponder::decode(msg, self.suite)? {
            SecondToResponder::Reject(r) => return Err(HandshakeError::Rejected(r.reason)),
            SecondToResponder::Fin(fin) => fin,
        };
        let th3 = self.transcript.th3_after_mac(&msg[..fin.th3_len()]);
        let th4 = self.transcript.th4(&msg[fin.th3_len()..msg.len() - 32]);
        verify_mac(&self.schedule.conf_i()?, &th4, &fin.mac)?;
        let peer_key = verified_key(verifier, &fin.record, &self.remote_peer_id, self.suite)?;
        peer_key
            .verify(&signed_message(LABEL_FIN, &th3), &fin.sig)
            .map_err(|_| HandshakeError::BadSignature)?;
        let (i2r, r2i) = self.schedule.traffic_secrets(&th4)?;
        let channel = Channel::new(r2i, i2r, self.config.key_update)?;
        Ok(Established {
            suite: self.suite,
            peer_key,
            peer_record: fin.record,
            transcript_hash: th4,
            channel,
        })
    }
}

// Full handshakes need the PQ primitives.
#[cfg(all(test, feature = "pqc"))]
mod tests;
