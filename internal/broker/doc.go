// Package broker owns converge's NATS JetStream plumbing: the embedded
// server, the JetStream streams, the publisher used by the outbox relay,
// the consumer loop that feeds the inbox, and the retry/dead-letter policy.
//
// Delivery is at-least-once end to end. The publisher only reports success
// once every message has a PubAck (so the relay may resend a whole batch,
// relying on Nats-Msg-Id de-duplication), and the consumer acks a message
// only after the handler has applied it; everything else is naked with a
// delay or dead-lettered, never dropped.
package broker
