//! Mutual challenge-response over the cluster cookie, before any other frame is accepted.
//!
//! ```text
//! client (dials)                                        server (accepts)
//!   | Challenge{version, Ns}                              |  first frame, sent on accept:
//!   |<----------------------------------------------------|  nothing cookie-derived, no name
//!   | Hello{version, node, channel, idx, Nc, Pc}          |  Pc = HMAC(cookie, "client" T)
//!   |---------------------------------------------------->|  server checks Pc, then the channel
//!   | Accept{max_frame, Ps}    (client checks Ps)         |  Ps = HMAC(cookie, "server" T max_frame)
//!   |<----------------------------------------------------|
//!
//!   T = version, Ns, Nc, client node, server node, channel, idx   (names length-prefixed)
//! ```
//!
//! **The connecting side proves first**, as in Distributed Erlang: the accepting side — the one
//! anybody can reach — sends nothing that depends on the cookie until the client has proved it
//! knows it. A prober gets a random nonce and, if its proof fails, "authentication failed": not
//! the node's name, not its channels, and no value against which to test cookie guesses offline
//! (the property tests below check that the server's bytes in a failed handshake are the same
//! whatever its cookie). The client proves over the name of the node it *meant* to dial, so a
//! different node at that address fails the proof as well.
//!
//! Reflection: the two proofs carry different role labels, both names sit at fixed positions of
//! the transcript, and a server refuses a client that claims the server's own name, so a proof a
//! node made as a client can never pass as a client proof to itself, nor as a server proof. Both
//! nonces are fresh per connection, so a recorded handshake cannot be replayed. The handshake
//! authenticates the peer; it does not encrypt or protect the frames that follow (TLS's job).
//!
//! The dialing side still sends its proof to whatever answers at the address it dials; it dials
//! only addresses from node specs the operator gave it or authenticated peers gossiped.
//!
//! The state machines hold no socket and draw no randomness: the shell passes nonces in.
//!
//! ```
//! use partisan_core::handshake::*;
//! let mut server = ServerHandshake::new("b@h", b"cookie", 1 << 20, [2; 32]);
//! let challenge = server.challenge();
//! let client = ClientHandshake::new("a@h", "b@h", "undefined", 0, b"cookie", [1; 32]);
//! let (client, hello) = client.on_challenge(challenge).unwrap();
//! let (peer, accept) = server.on_hello(hello, |_, _| true).unwrap();
//! assert_eq!(peer.node, "a@h");
//! assert_eq!(client.on_accept(accept).unwrap(), 1 << 20);
//! ```

use crate::frame::{Frame, NONCE_LEN, PROTOCOL_VERSION};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const CLIENT_ROLE: &[u8] = b"partisan/2 client proof";
const SERVER_ROLE: &[u8] = b"partisan/2 server proof";

/// Why a handshake failed. The connection is closed in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("peer speaks protocol version {theirs}, this node speaks {ours}")]
    VersionMismatch { ours: u16, theirs: u16 },
    #[error("authentication failed: the peer does not use this node's cookie, or the node at that address is not the one dialed")]
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

/// Everything both proofs cover.
struct Transcript<'a> {
    server_nonce: &'a [u8; NONCE_LEN],
    client_nonce: &'a [u8; NONCE_LEN],
    client: &'a str,
    server: &'a str,
    channel: &'a str,
    conn_index: u16,
}

impl Transcript<'_> {
    fn mac(&self, cookie: &[u8], role: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(cookie).expect("HMAC accepts keys of any length");
        mac.update(role);
        mac.update(&PROTOCOL_VERSION.to_be_bytes());
        mac.update(self.server_nonce);
        mac.update(self.client_nonce);
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") give different proofs.
        for s in [self.client, self.server, self.channel] {
            mac.update(&(s.len() as u32).to_be_bytes());
            mac.update(s.as_bytes());
        }
        mac.update(&self.conn_index.to_be_bytes());
        mac
    }

    fn client_proof(&self, cookie: &[u8]) -> HmacSha256 {
        self.mac(cookie, CLIENT_ROLE)
    }

    fn server_proof(&self, cookie: &[u8], max_frame: u32) -> HmacSha256 {
        let mut mac = self.mac(cookie, SERVER_ROLE);
        mac.update(&max_frame.to_be_bytes());
        mac
    }
}

fn frame_kind(frame: &Frame) -> &'static str {
    match frame {
        Frame::Hello { .. } => "hello",
        Frame::Challenge { .. } => "challenge",
        Frame::Accept { .. } => "accept",
        Frame::Refused { .. } => "refused",
        Frame::Message { .. } => "message",
        Frame::Relay { .. } => "relay",
        Frame::Control { .. } => "control",
        Frame::Broadcast { .. } => "broadcast",
        Frame::Ping { .. } => "ping",
        Frame::Pong { .. } => "pong",
        Frame::Sequenced { .. } => "sequenced message",
        Frame::Ack { .. } => "ack",
    }
}

/// The dialing side, waiting for the server's challenge.
#[derive(Debug)]
pub struct ClientHandshake {
    node: String,
    server: String,
    channel: String,
    conn_index: u16,
    cookie: Vec<u8>,
    nonce: [u8; NONCE_LEN],
}

/// The dialing side after it sent its proof, waiting for the server's.
#[derive(Debug)]
pub struct ClientAwaitAccept {
    cookie: Vec<u8>,
    server_nonce: [u8; NONCE_LEN],
    client_nonce: [u8; NONCE_LEN],
    names: (String, String, String, u16),
}

impl ClientHandshake {
    /// A handshake of `node` dialing `server` (the name it expects to answer) for connection
    /// `conn_index` of `channel`. Nothing is sent until the server's challenge arrives.
    pub fn new(node: &str, server: &str, channel: &str, conn_index: u16, cookie: &[u8], nonce: [u8; NONCE_LEN]) -> Self {
        ClientHandshake {
            node: node.to_owned(),
            server: server.to_owned(),
            channel: channel.to_owned(),
            conn_index,
            cookie: cookie.to_vec(),
            nonce,
        }
    }

    /// Answers the server's challenge with the hello frame to send (which carries our proof).
    pub fn on_challenge(self, frame: Frame) -> Result<(ClientAwaitAccept, Frame), HandshakeError> {
        let server_nonce = match frame {
            Frame::Challenge { version, nonce } if version == PROTOCOL_VERSION => nonce,
            Frame::Challenge { version, .. } => {
                return Err(HandshakeError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: version })
            }
            Frame::Refused { reason } => return Err(HandshakeError::Refused(reason)),
            other => return Err(HandshakeError::UnexpectedFrame { expected: "challenge", got: frame_kind(&other) }),
        };
        let t = Transcript {
            server_nonce: &server_nonce,
            client_nonce: &self.nonce,
            client: &self.node,
            server: &self.server,
            channel: &self.channel,
            conn_index: self.conn_index,
        };
        let proof = t.client_proof(&self.cookie).finalize().into_bytes().into();
        let hello = Frame::Hello {
            version: PROTOCOL_VERSION,
            node: self.node.clone(),
            channel: self.channel.clone(),
            conn_index: self.conn_index,
            nonce: self.nonce,
            proof,
        };
        let next = ClientAwaitAccept {
            cookie: self.cookie,
            server_nonce,
            client_nonce: self.nonce,
            names: (self.node, self.server, self.channel, self.conn_index),
        };
        Ok((next, hello))
    }
}

impl ClientAwaitAccept {
    /// Checks the server's proof. On success the connection is established; returns the largest
    /// frame the server accepts.
    pub fn on_accept(self, frame: Frame) -> Result<u32, HandshakeError> {
        match frame {
            Frame::Accept { max_frame, proof } => {
                let (client, server, channel, conn_index) = &self.names;
                let t = Transcript {
                    server_nonce: &self.server_nonce,
                    client_nonce: &self.client_nonce,
                    client,
                    server,
                    channel,
                    conn_index: *conn_index,
                };
                t.server_proof(&self.cookie, max_frame).verify_slice(&proof).map_err(|_| HandshakeError::BadProof)?;
                Ok(max_frame)
            }
            Frame::Refused { reason } => Err(HandshakeError::Refused(reason)),
            other => Err(HandshakeError::UnexpectedFrame { expected: "accept", got: frame_kind(&other) }),
        }
    }
}

/// The accepting side.
#[derive(Debug)]
pub struct ServerHandshake {
    node: String,
    cookie: Vec<u8>,
    max_frame: u32,
    nonce: [u8; NONCE_LEN],
}

impl ServerHandshake {
    /// `max_frame` is the largest frame this node accepts; the client learns it (authenticated)
    /// and refuses larger messages at the sender.
    pub fn new(node: &str, cookie: &[u8], max_frame: u32, nonce: [u8; NONCE_LEN]) -> Self {
        ServerHandshake { node: node.to_owned(), cookie: cookie.to_vec(), max_frame, nonce }
    }

    /// The first frame on an accepted connection: our version and nonce, nothing else.
    pub fn challenge(&self) -> Frame {
        Frame::Challenge { version: PROTOCOL_VERSION, nonce: self.nonce }
    }

    /// Checks the client's hello. `has_channel(name, index)` says whether this node serves that
    /// connection; it is asked only once the client has proved it knows the cookie, so an
    /// unauthenticated peer learns nothing about the channels. On success returns the client and
    /// the accept frame to send. On `Err`, the shell may send [`HandshakeError::refusal`] and
    /// must close.
    pub fn on_hello(&self, frame: Frame, has_channel: impl Fn(&str, u16) -> bool) -> Result<(PeerHello, Frame), HandshakeError> {
        let Frame::Hello { version, node, channel, conn_index, nonce, proof } = frame else {
            return Err(HandshakeError::UnexpectedFrame { expected: "hello", got: frame_kind(&frame) });
        };
        if version != PROTOCOL_VERSION {
            return Err(HandshakeError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: version });
        }
        if node.is_empty() {
            return Err(HandshakeError::EmptyNodeName);
        }
        // Our own name as the client's: only a reflected proof could claim it. Refused like any
        // failed proof, so the refusal does not confirm a guess of our name.
        if node == self.node {
            return Err(HandshakeError::BadProof);
        }
        let t = Transcript {
            server_nonce: &self.nonce,
            client_nonce: &nonce,
            client: &node,
            server: &self.node,
            channel: &channel,
            conn_index,
        };
        t.client_proof(&self.cookie).verify_slice(&proof).map_err(|_| HandshakeError::BadProof)?;
        // Authenticated from here on: telling the peer what is wrong helps its operator.
        if !has_channel(&channel, conn_index) {
            return Err(HandshakeError::UnknownChannel { channel, index: conn_index });
        }
        let accept = Frame::Accept {
            max_frame: self.max_frame,
            proof: t.server_proof(&self.cookie, self.max_frame).finalize().into_bytes().into(),
        };
        Ok((PeerHello { node, channel, conn_index }, accept))
    }
}

impl HandshakeError {
    /// The frame that tells the peer why, where telling it helps the operator and reveals nothing
    /// to a prober: a version mismatch (our version is in the challenge anyway), a failed proof
    /// (a generic text), and an unknown channel only to a peer that proved the cookie.
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

    fn run(client_cookie: &[u8], server_cookie: &[u8]) -> Result<(PeerHello, u32), HandshakeError> {
        let server = ServerHandshake::new("b@h", server_cookie, 4096, [2; 32]);
        let client = ClientHandshake::new("a@h", "b@h", "undefined", 2, client_cookie, [1; 32]);
        let (client, hello) = client.on_challenge(server.challenge())?;
        let (peer, accept) = server.on_hello(hello, all)?;
        let max = client.on_accept(accept)?;
        Ok((peer, max))
    }

    #[test]
    fn same_cookie_authenticates_both_sides() {
        let (peer, max) = run(b"secret", b"secret").unwrap();
        assert_eq!(peer, PeerHello { node: "a@h".into(), channel: "undefined".into(), conn_index: 2 });
        assert_eq!(max, 4096);
    }

    #[test]
    fn different_cookie_fails_at_the_server_first() {
        let server = ServerHandshake::new("b@h", b"other", 4096, [2; 32]);
        let client = ClientHandshake::new("a@h", "b@h", "undefined", 0, b"secret", [1; 32]);
        let (_, hello) = client.on_challenge(server.challenge()).unwrap();
        let err = server.on_hello(hello, all).unwrap_err();
        assert_eq!(err, HandshakeError::BadProof);
        assert_eq!(err.refusal(), Some(Frame::Refused { reason: "authentication failed".into() }));
    }

    #[test]
    fn the_challenge_is_the_same_whatever_the_cookie_and_names_nothing() {
        let a = ServerHandshake::new("b@h", b"secret42", 4096, [2; 32]).challenge();
        let b = ServerHandshake::new("zz@other", b"something else", 1, [2; 32]).challenge();
        assert_eq!(a, b);
        assert_eq!(a.to_bytes().len(), 4 + 1 + 2 + NONCE_LEN);
    }

    #[test]
    fn a_node_at_the_dialed_address_with_another_name_fails_the_proof() {
        let server = ServerHandshake::new("impostor@h", b"s", 4096, [2; 32]);
        let client = ClientHandshake::new("a@h", "b@h", "undefined", 0, b"s", [1; 32]);
        let (_, hello) = client.on_challenge(server.challenge()).unwrap();
        assert_eq!(server.on_hello(hello, all).unwrap_err(), HandshakeError::BadProof);
    }

    #[test]
    fn unknown_channel_is_checked_only_after_the_proof() {
        // Without the cookie: the generic refusal, whatever the channel.
        let server = ServerHandshake::new("b@h", b"s", 4096, [2; 32]);
        let client = ClientHandshake::new("a@h", "b@h", "gossip", 7, b"wrong", [1; 32]);
        let (_, hello) = client.on_challenge(server.challenge()).unwrap();
        assert_eq!(server.on_hello(hello, |c, i| c == "gossip" && i < 2).unwrap_err(), HandshakeError::BadProof);
        // With it: the peer is told which channel is missing.
        let client = ClientHandshake::new("a@h", "b@h", "gossip", 7, b"s", [1; 32]);
        let (_, hello) = client.on_challenge(server.challenge()).unwrap();
        let err = server.on_hello(hello, |c, i| c == "gossip" && i < 2).unwrap_err();
        assert_eq!(err, HandshakeError::UnknownChannel { channel: "gossip".into(), index: 7 });
        assert!(matches!(err.refusal(), Some(Frame::Refused { reason }) if reason.contains("gossip")));
    }

    #[test]
    fn version_is_checked_on_both_sides() {
        let client = ClientHandshake::new("a@h", "b@h", "undefined", 0, b"s", [1; 32]);
        let err = client.on_challenge(Frame::Challenge { version: 99, nonce: [0; 32] }).unwrap_err();
        assert_eq!(err, HandshakeError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: 99 });
        let server = ServerHandshake::new("b@h", b"s", 4096, [2; 32]);
        let hello = Frame::Hello { version: 1, node: "a@h".into(), channel: "undefined".into(), conn_index: 0, nonce: [0; 32], proof: [0; 32] };
        assert_eq!(server.on_hello(hello, all).unwrap_err(), HandshakeError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: 1 });
    }

    #[test]
    fn message_before_authentication_is_refused() {
        let server = ServerHandshake::new("b@h", b"secret", 4096, [2; 32]);
        assert_eq!(
            server.on_hello(Frame::Ping { seq: 1 }, all).unwrap_err(),
            HandshakeError::UnexpectedFrame { expected: "hello", got: "ping" }
        );
        let client = ClientHandshake::new("a@h", "b@h", "undefined", 0, b"s", [1; 32]);
        let (client, _) = client.on_challenge(ServerHandshake::new("b@h", b"s", 1, [2; 32]).challenge()).unwrap();
        let err = client.on_accept(Frame::Control { body: Default::default() }).unwrap_err();
        assert_eq!(err, HandshakeError::UnexpectedFrame { expected: "accept", got: "control" });
    }

    #[test]
    fn client_reports_refusal_reason() {
        let client = ClientHandshake::new("a@h", "b@h", "undefined", 0, b"s", [1; 32]);
        let err = client.on_challenge(Frame::Refused { reason: "nope".into() }).unwrap_err();
        assert_eq!(err, HandshakeError::Refused("nope".into()));
    }

    #[test]
    fn reflected_proofs_fail() {
        let server = ServerHandshake::new("b@h", b"s", 4096, [2; 32]);
        // A server's own proof sent back as a client's (same transcript, other role): refused.
        let client = ClientHandshake::new("a@h", "b@h", "undefined", 0, b"s", [1; 32]);
        let (_, hello) = client.on_challenge(server.challenge()).unwrap();
        let (_, accept) = server.on_hello(hello.clone(), all).unwrap();
        let (Frame::Hello { node, channel, conn_index, nonce, .. }, Frame::Accept { proof, .. }) = (hello, accept) else { panic!() };
        let reflected = Frame::Hello { version: PROTOCOL_VERSION, node, channel, conn_index, nonce, proof };
        assert_eq!(server.on_hello(reflected, all).unwrap_err(), HandshakeError::BadProof);
        // The server's nonce relayed to the server itself as a dial, so that it proves as a
        // client to "itself": it never dials its own name, and a hello claiming it is refused.
        let me = ClientHandshake::new("b@h", "b@h", "undefined", 0, b"s", [3; 32]);
        let (_, own) = me.on_challenge(server.challenge()).unwrap();
        assert_eq!(server.on_hello(own, all).unwrap_err(), HandshakeError::BadProof);
    }

    #[test]
    fn replayed_hello_fails_against_a_fresh_nonce() {
        let server = ServerHandshake::new("b@h", b"s", 4096, [2; 32]);
        let client = ClientHandshake::new("a@h", "b@h", "undefined", 0, b"s", [1; 32]);
        let (_, recorded) = client.on_challenge(server.challenge()).unwrap();
        let later = ServerHandshake::new("b@h", b"s", 4096, [9; 32]);
        assert_eq!(later.on_hello(recorded, all).unwrap_err(), HandshakeError::BadProof);
    }

    #[test]
    fn a_tampered_max_frame_fails_the_server_proof() {
        let server = ServerHandshake::new("b@h", b"s", 4096, [2; 32]);
        let client = ClientHandshake::new("a@h", "b@h", "undefined", 0, b"s", [1; 32]);
        let (client, hello) = client.on_challenge(server.challenge()).unwrap();
        let (_, accept) = server.on_hello(hello, all).unwrap();
        let Frame::Accept { proof, .. } = accept else { panic!() };
        assert_eq!(client.on_accept(Frame::Accept { max_frame: 1 << 30, proof }).unwrap_err(), HandshakeError::BadProof);
    }

    /// Every byte a server sends during a handshake that fails because the client does not know
    /// the cookie (its challenge, then its refusal).
    fn server_bytes(server_cookie: &[u8], server_node: &str, nonce: [u8; 32], hello: Frame) -> Vec<u8> {
        let server = ServerHandshake::new(server_node, server_cookie, 1 << 20, nonce);
        let mut out = server.challenge().to_bytes().to_vec();
        match server.on_hello(hello, |c, _| c == "data") {
            Ok(_) => panic!("accepted a client without the cookie"),
            Err(e) => {
                if let Some(f) = e.refusal() {
                    out.extend_from_slice(&f.to_bytes());
                }
            }
        }
        out
    }

    proptest! {
        /// No transcript of a failed handshake contains a value the cookie determines: whatever
        /// the client sends without the cookie, the server's bytes are the same for any two
        /// cookies, and they name neither the server nor its channels.
        #[test]
        fn failed_handshake_transcripts_do_not_depend_on_the_cookie(
            c1 in proptest::collection::vec(any::<u8>(), 1..24),
            c2 in proptest::collection::vec(any::<u8>(), 1..24),
            guess in proptest::collection::vec(any::<u8>(), 1..24),
            ns in any::<[u8; 32]>(), nc in any::<[u8; 32]>(), idx in 0u16..4,
            channel in prop_oneof![Just("data".to_string()), "[a-z]{1,8}"],
            random_proof in any::<bool>(), proof in any::<[u8; 32]>(),
        ) {
            prop_assume!(guess != c1 && guess != c2);
            let server_node = "secret-name@h";
            let hello = if random_proof {
                Frame::Hello { version: PROTOCOL_VERSION, node: "x@h".into(), channel: channel.clone(), conn_index: idx, nonce: nc, proof }
            } else {
                let challenge = Frame::Challenge { version: PROTOCOL_VERSION, nonce: ns };
                ClientHandshake::new("x@h", server_node, &channel, idx, &guess, nc).on_challenge(challenge).unwrap().1
            };
            let t1 = server_bytes(&c1, server_node, ns, hello.clone());
            let t2 = server_bytes(&c2, server_node, ns, hello);
            prop_assert_eq!(&t1, &t2);
            let text = String::from_utf8_lossy(&t1);
            prop_assert!(!text.contains("secret-name") && !text.contains("data"), "{:?}", text);
        }

        /// Arbitrary bytes fed to a server yield an error, never a panic and never an acceptance.
        #[test]
        fn random_bytes_never_authenticate(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::from(&data[..]);
            let mut dec = Decoder::new(1024);
            let server = ServerHandshake::new("b@h", b"secret", 4096, [2; 32]);
            if let Ok(Some(frame)) = dec.decode(&mut buf) {
                prop_assert!(server.on_hello(frame, all).is_err());
            }
        }
    }
}
