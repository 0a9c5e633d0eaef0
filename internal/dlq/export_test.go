package dlq

// ReplayMsg exposes the message Replay publishes, so a test can publish
// it once on its own: a replay whose delete was lost.
var ReplayMsg = replayMsg
