//! Mutual challenge-response over the cluster cookie, before any other frame is accepted.
//!
//! ```text
//! client                                   server
//!   | Hello{version, node, channel, idx, Nc}  |
//!   |---------------------------------------->|  version and channel checked
//!   | Challenge{version, node, Ns, Ps}        |  Ps = HMAC(cookie, "server" Nc Ns names)
//!   |<----------------------------------------|
//!   | Proof{Pc}  (client checked Ps first)    |  Pc = HMAC(cookie, "client" Ns Nc names)
//!   |---------------------------------------->|  server checks Pc: now authenticated
//! ```
//!
//! Both sides prove knowledge of the cookie without sending it; fresh nonces from both sides make
//! a recorded handshake useless for a replay. Until [`ServerHandshake::on_frame`] returns
//! [`ServerStep::Accepted`], the shell must treat every byte as hostile: only this module's
//! parser sees it, and a failure closes the connection.
//!
//! The state machines hold no socket and draw no randomness: the shell passes nonces in.
//!
//! ```
//! use partisan_core::handshake::*;
//! let (mut client, hello) = ClientHandshake::start("a@h", "undefined", 0, b"cookie", [1; 32]);
//! let mut server = ServerHandshake::new("b@h", b"cookie", [2; 32]);
//! let challenge = match server.on_frame(hello, |_, _| true).unwrap() {
//!     ServerStep::Reply(f) => f,
//!     _ => unreachable!(),
//! };
//! let (proof, server_node) = client.on_frame(challenge).unwrap();
//! assert_eq!(server_node, "b@h");
//! assert!(matches!(server.on_frame(proof, |_, _| true).unwrap(), ServerStep::Accepted(p) if p.node == "a@h"));
//! ```

use crate::frame::{Frame, NONCE_LEN, PROTOCOL_VERSION};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a handshake failed. The connection is closed in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("peer speaks protocol version {theirs}, this node speaks {ours}")]
    VersionMismatch { ours: u16, theirs: u16 },
    #[error("peer failed the cookie challenge (check that both nodes use the same cookie)")]
    BadProof,
    #[error("unexpected {got} frame during the handshake (expected {expected})")]
    UnexpectedFrame { expected: &'static str, got: &'static str },
    #[error("peer refused the connection: {0}")]
    Refused(String),
    #[error("peer asked for channel {channel:?} connection {index}, which this node does not have")]
    UnknownChannel { channel: String, index: u16 },
    #[error("peer sent an empty node name")]
    EmptyNodeName,
}

/// What the server learned about an authenticated client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHello {
    pub node: String,
    pub channel: String,
    pub conn_index: u16,
}

fn proof(cookie: &[u8], role: &[u8], n1: &[u8; NONCE_LEN], n2: &[u8; NONCE_LEN], a: &str, b: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(cookie).expect("HMAC accepts keys of any length");
    mac.update(role);
    mac.update(n1);
    mac.update(n2);
    // Length-prefix the names so that ("ab", "c") and ("a", "bc") give different proofs.
    for name in [a, b] {
        mac.update(&(name.len() as u32).to_be_bytes());
        mac.update(name.as_bytes());
    }
    mac
}

fn frame_kind(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello { .. } => "hello",
        Frame::Challenge { .. } => "challenge",
        Frame::Proof { .. } => "proof",
        Frame::Refused { .. } => "refused",
        Frame::Message { .. } => "message",
        Frame::Relay { .. } => "relay",
        Frame::Control { .. } => "control",
        Frame::Broadcast { .. } => "broadcast",
        Frame::Ping { .. } => "ping",
        Frame::Pong { .. } => "pong",
    }
}

/// The dialing side.
#[derive(Debug)]
pub struct ClientHandshake {
    node: String,
    cookie: Vec<u8>,
    nonce: [u8; NONCE_LEN],
}

impl ClientHandshake {
    /// Begins a handshake for connection `conn_index` of `channel`; send the returned frame.
    pub fn start(node: &str, channel: &str, conn_index: u16, cookie: &[u8], nonce: [u8; NONCE_LEN]) -> (Self, Frame) {
        let hello = Frame::Hello {
            version: PROTOCOL_VERSION,
            node: node.to_owned(),
            channel: channel.to_owned(),
            conn_index,
            nonce,
        };
        (ClientHandshake { node: node.to_owned(), cookie: cookie.to_vec(), nonce }, hello)
    }

    /// Checks the server's challenge. On success returns the proof frame to send and the
    /// server's node name; the connection is then established.
    pub fn on_frame(self, frame: Frame) -> Result<(Frame, String), HandshakeError> {
        match frame {
            Frame::Challenge { version, node, nonce, proof: server_proof } => {
                if version != PROTOCOL_VERSION {
                    return Err(HandshakeError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: version });
                }
                proof(&self.cookie, b"server", &self.nonce, &nonce, &node, &self.node)
                    .verify_slice(&server_proof)
                    .map_err(|_| HandshakeError::BadProof)?;
                let mine = proof(&self.cookie, b"client", &nonce, &self.nonce, &self.node, &node);
                let reply = Frame::Proof { proof: mine.finalize().into_bytes().into() };
                Ok((reply, node))
            }
            Frame::Refused { reason } => Err(HandshakeError::Refused(reason)),
            other => Err(HandshakeError::UnexpectedFrame { expected: "challenge", got: frame_kind(&other) }),
        }
    }
}

/// What the server does after a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerStep {
    /// Send this frame and wait for the next.
    Reply(Frame),
    /// The client is authenticated; frames after this one may be processed.
    Accepted(PeerHello),
}

/// The accepting side.
#[derive(Debug)]
pub struct ServerHandshake {
    node: String,
    cookie: Vec<u8>,
    nonce: [u8; NONCE_LEN],
    hello: Option<(PeerHello, [u8; NONCE_LEN])>,
}

impl ServerHandshake {
    pub fn new(node: &str, cookie: &[u8], nonce: [u8; NONCE_LEN]) -> Self {
        ServerHandshake { node: node.to_owned(), cookie: cookie.to_vec(), nonce, hello: None }
    }

    /// Feeds one frame. `has_channel(name, index)` says whether this node serves that
    /// connection. On `Err`, the shell may send [`HandshakeError::refusal`] and must close.
    pub fn on_frame(&mut self, frame: Frame, has_channel: impl Fn(&str, u16) -> bool) -> Result<ServerStep, HandshakeError> {
        match (self.hello.take(), frame) {
            (None, Frame::Hello { version, node, channel, conn_index, nonce }) => {
                if version != PROTOCOL_VERSION {
                    return Err(HandshakeError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: version });
                }
                if node.is_empty() {
                    return Err(HandshakeError::EmptyNodeName);
                }
                if !has_channel(&channel, conn_index) {
                    return Err(HandshakeError::UnknownChannel { channel, index: conn_index });
                }
                let mine = proof(&self.cookie, b"server", &nonce, &self.nonce, &self.node, &node);
                let challenge = Frame::Challenge {
                    version: PROTOCOL_VERSION,
                    node: self.node.clone(),
                    nonce: self.nonce,
                    proof: mine.finalize().into_bytes().into(),
                };
                self.hello = Some((PeerHello { node, channel, conn_index }, nonce));
                Ok(ServerStep::Reply(challenge))
            }
            (Some((peer, client_nonce)), Frame::Proof { proof: client_proof }) => {
                proof(&self.cookie, b"client", &self.nonce, &client_nonce, &peer.node, &self.node)
                    .verify_slice(&client_proof)
                    .map_err(|_| HandshakeError::BadProof)?;
                Ok(ServerStep::Accepted(peer))
            }
            (state, other) => Err(HandshakeError::UnexpectedFrame {
                expected: if state.is_none() { "hello" } else { "proof" },
                got: frame_kind(&other),
            }),
        }
    }
}

impl HandshakeError {
    /// The frame that tells the peer why, where telling it helps the operator. A failed proof
    /// gets no explanation beyond the generic one, so a prober learns nothing.
    pub fn refusal(&self) -> Option<Frame> {
        match self {
            HandshakeError::VersionMismatch { .. } | HandshakeError::UnknownChannel { .. } => {
                Some(Frame::Refused { reason: self.to_string() })
            }
            HandshakeError::BadProof => Some(Frame::Refused { reason: "authentication failed".into() }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Decoder;
    use bytes::BytesMut;
    use proptest::prelude::*;

    fn all(_: &str, _: u16) -> bool {
        true
    }

    fn run(client_cookie: &[u8], server_cookie: &[u8]) -> Result<(PeerHello, String), HandshakeError> {
        let (client, hello) = ClientHandshake::start("a@h", "undefined", 2, client_cookie, [1; 32]);
        let mut server = ServerHandshake::new("b@h", server_cookie, [2; 32]);
        let ServerStep::Reply(challenge) = server.on_frame(hello, all)? else { panic!("expected reply") };
        let (proof, server_node) = client.on_frame(challenge)?;
        match server.on_frame(proof, all)? {
            ServerStep::Accepted(peer) => Ok((peer, server_node)),
            ServerStep::Reply(_) => panic!("expected accept"),
        }
    }

    #[test]
    fn same_cookie_authenticates_both_sides() {
        let (peer, server) = run(b"secret", b"secret").unwrap();
        assert_eq!(peer, PeerHello { node: "a@h".into(), channel: "undefined".into(), conn_index: 2 });
        assert_eq!(server, "b@h");
    }

    #[test]
    fn different_cookie_fails_at_the_client_first() {
        assert_eq!(run(b"secret", b"other").unwrap_err(), HandshakeError::BadProof);
    }

    #[test]
    fn forged_client_proof_is_refused() {
        let (_, hello) = ClientHandshake::start("a@h", "undefined", 0, b"secret", [1; 32]);
        let mut server = ServerHandshake::new("b@h", b"secret", [2; 32]);
        server.on_frame(hello, all).unwrap();
        let err = server.on_frame(Frame::Proof { proof: [0; 32] }, all).unwrap_err();
        assert_eq!(err, HandshakeError::BadProof);
        assert_eq!(err.refusal(), Some(Frame::Refused { reason: "authentication failed".into() }));
    }

    #[test]
    fn message_before_authentication_is_refused() {
        let mut server = ServerHandshake::new("b@h", b"secret", [2; 32]);
        let msg = Frame::Ping { seq: 1 };
        assert_eq!(server.on_frame(msg, all).unwrap_err(), HandshakeError::UnexpectedFrame { expected: "hello", got: "ping" });
        let (_, hello) = ClientHandshake::start("a@h", "undefined", 0, b"secret", [1; 32]);
        let mut server = ServerHandshake::new("b@h", b"secret", [2; 32]);
        server.on_frame(hello, all).unwrap();
        let ctl = Frame::Control { body: Default::default() };
        assert_eq!(server.on_frame(ctl, all).unwrap_err(), HandshakeError::UnexpectedFrame { expected: "proof", got: "control" });
    }

    #[test]
    fn version_and_channel_are_checked() {
        let hello = Frame::Hello { version: 99, node: "a@h".into(), channel: "undefined".into(), conn_index: 0, nonce: [0; 32] };
        let mut server = ServerHandshake::new("b@h", b"s", [2; 32]);
        assert_eq!(server.on_frame(hello, all).unwrap_err(), HandshakeError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: 99 });
        let (_, hello) = ClientHandshake::start("a@h", "gossip", 7, b"s", [1; 32]);
        let mut server = ServerHandshake::new("b@h", b"s", [2; 32]);
        let err = server.on_frame(hello, |c, i| c == "gossip" && i < 2).unwrap_err();
        assert_eq!(err, HandshakeError::UnknownChannel { channel: "gossip".into(), index: 7 });
        assert!(matches!(err.refusal(), Some(Frame::Refused { reason }) if reason.contains("gossip")));
    }

    #[test]
    fn client_reports_refusal_reason() {
        let (client, _) = ClientHandshake::start("a@h", "undefined", 0, b"s", [1; 32]);
        let err = client.on_frame(Frame::Refused { reason: "nope".into() }).unwrap_err();
        assert_eq!(err, HandshakeError::Refused("nope".into()));
    }

    #[test]
    fn replayed_challenge_from_another_session_fails() {
        // A challenge recorded for client nonce [1;32] does not verify for a client using [3;32].
        let (_, hello) = ClientHandshake::start("a@h", "undefined", 0, b"s", [1; 32]);
        let mut server = ServerHandshake::new("b@h", b"s", [2; 32]);
        let ServerStep::Reply(recorded) = server.on_frame(hello, all).unwrap() else { panic!() };
        let (client, _) = ClientHandshake::start("a@h", "undefined", 0, b"s", [3; 32]);
        assert_eq!(client.on_frame(recorded).unwrap_err(), HandshakeError::BadProof);
    }

    proptest! {
        /// Arbitrary bytes fed to a server handshake yield an error or a reply, never a panic and
        /// never an acceptance without the cookie.
        #[test]
        fn random_bytes_never_authenticate(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::from(&data[..]);
            let mut dec = Decoder::new(1024);
            let mut server = ServerHandshake::new("b@h", b"secret", [2; 32]);
            while let Ok(Some(frame)) = dec.decode(&mut buf) {
                match server.on_frame(frame, all) {
                    Ok(ServerStep::Accepted(_)) => prop_assert!(false, "accepted random bytes"),
                    Ok(ServerStep::Reply(_)) => continue,
                    Err(_) => break,
                }
            }
        }
    }
}
