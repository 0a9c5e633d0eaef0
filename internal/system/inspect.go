package system

import (
	"fmt"

	"github.com/convergehq/converge/internal/lb"
)

// InRotation returns the URLs of the gateway instances the load balancer
// sends requests to now, spelt as in GatewayURLs. Fault tests use it to see
// a dead instance leave rotation, which the balancer's connect retry hides
// from clients.
func (s *System) InRotation() []string {
	if s.lbServer == nil {
		return nil
	}
	// The balancer is reached through the server that serves it, so this
	// accessor needs nothing more of System than Start already keeps.
	bal, ok := s.lbServer.Handler.(*lb.Balancer)
	if !ok {
		panic(fmt.Sprintf("system: the load balancer serves a %T, not an *lb.Balancer", s.lbServer.Handler))
	}
	return bal.Healthy()
}
