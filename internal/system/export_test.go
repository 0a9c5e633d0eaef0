package system

import "time"

// WithRetry shortens the consumers' retry schedule, so a test can make an
// event exhaust its deliveries (and be dead-lettered) in a second instead
// of the two minutes the defaults take.
func WithRetry(cfg Config, maxDeliver int, backoff ...time.Duration) Config {
	cfg.maxDeliver, cfg.retryBackoff = maxDeliver, backoff
	return cfg
}
