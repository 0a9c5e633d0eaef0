package load

import (
	"fmt"
	"time"
)

// Progress is the running count of a run, as Config.OnProgress gets it.
type Progress struct {
	Sent     int           // POSTs answered or failed
	Accepted int           // POSTs answered 202
	Final    int           // accepted orders seen out of PENDING
	Errors   int           // failed requests: POSTs, cancels and GETs
	Rate     float64       // orders accepted in the last second
	Elapsed  time.Duration // since the first order was due
	// Behind is, in the open model, how late the latest order was started
	// against its schedule: the client is not keeping up when it grows.
	Behind time.Duration
}

// String is the progress line: "sent 1200  accepted 1200  final 1150
// errors 0  412/s  2.9s", with "behind 1.2s" when the client is late.
func (p Progress) String() string {
	s := fmt.Sprintf("sent %d  accepted %d  final %d  errors %d  %s/s  %s",
		p.Sent, p.Accepted, p.Final, p.Errors, fmtRate(p.Rate), p.Elapsed.Truncate(100*time.Millisecond))
	if p.Behind > behindAfter {
		s += "  behind " + fmtDur(p.Behind)
	}
	return s
}
