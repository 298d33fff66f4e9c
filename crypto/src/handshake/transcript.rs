//! Prologue and transcript hashes TH1..TH4 (PROTOCOL.md §5).

use sha2::{Digest, Sha512};

use super::HandshakeError;

/// `P = "pqnode/pq/1" ‖ u8 len ‖ initiator PeerId ‖ u8 len ‖ responder PeerId`.
pub fn prologue(initiator: &[u8], responder: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    let ilen = u8::try_from(initiator.len())
        .map_err(|_| HandshakeError::Protocol("initiator PeerId longer than 255 bytes"))?;
    let rlen = u8::try_from(responder.len())
        .map_err(|_| HandshakeError::Protocol("responder PeerId longer than 255 bytes"))?;
    let mut p = Vec::with_capacity(11 + 2 + initiator.len() + responder.len());
    p.extend_from_slice(b"pqnode/pq/1");
    p.push(ilen);
    p.extend_from_slice(initiator);
    p.push(rlen);
    p.extend_from_slice(responder);
    Ok(p)
}

/// `P' = P ‖ SHA-512(first Init body ‖ Retry body)`.
pub fn prologue_after_retry(prologue: &[u8], first_init: &[u8], retry: &[u8]) -> Vec<u8> {
    let digest = Sha512::new()
        .chain_update(first_init)
        .chain_update(retry)
        .finalize();
    let mut p = prologue.to_vec();
    p.extend_from_slice(&digest);
    p
}

fn hash(parts: &[&[u8]]) -> [u8; 64] {
    let mut h = Sha512::new();
    for part in parts {
        h.update(part);
    }
    let mut out = [0u8; 64];
    out.copy_from_slice(&h.finalize());
    out
}

/// The running transcript: each hash covers the previous one and the exact
/// bytes sent since (with their length prefixes).
#[derive(Clone)]
pub struct Transcript {
    prologue: Vec<u8>,
    last: [u8; 64],
    mac_r: [u8; 32],
}

impl Transcript {
    /// Starts from the prologue P (or P').
    pub fn new(prologue: &[u8]) -> Self {
        Transcript {
            prologue: prologue.to_vec(),
            last: [0; 64],
            mac_r: [0; 32],
        }
    }

    /// `TH1 = H(P ‖ Init ‖ Resp up to and including record_r)`.
    pub fn th1(&mut self, init: &[u8], resp_prefix: &[u8]) -> [u8; 64] {
        self.last = hash(&[&self.prologue, init, resp_prefix]);
        self.last
    }

    /// `TH2 = H(TH1 ‖ sig_r with its u16 length)`.
    pub fn th2(&mut self, sig_r: &[u8]) -> [u8; 64] {
        self.last = hash(&[&self.last, sig_r]);
        self.last
    }

    /// Records `mac_r` for [`Transcript::th3_after_mac`].
    pub fn absorb_mac(&mut self, mac_r: &[u8; 32]) {
        self.mac_r = *mac_r;
    }

    /// `TH3 = H(TH2 ‖ mac_r ‖ Fin up to and including record_i)`.
    pub fn th3(&mut self, mac_r: &[u8; 32], fin_prefix: &[u8]) -> [u8; 64] {
        self.absorb_mac(mac_r);
        self.th3_after_mac(fin_prefix)
    }

    /// TH3 with the `mac_r` recorded by [`Transcript::absorb_mac`].
    pub fn th3_after_mac(&mut self, fin_prefix: &[u8]) -> [u8; 64] {
        self.last = hash(&[&self.last, &self.mac_r, fin_prefix]);
        self.last
    }

    /// `TH4 = H(TH3 ‖ sig_i with its u16 length)`.
    pub fn th4(&mut self, sig_i: &[u8]) -> [u8; 64] {
        self.last = hash(&[&self.last, sig_i]);
        self.last
    }
}
