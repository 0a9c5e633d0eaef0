package order

import "time"

// SetWaitPoll sets how often s's Waits read their order again.
func SetWaitPoll(s *Service, d time.Duration) { s.waitPoll = d }
