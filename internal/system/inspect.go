package system

import "github.com/convergehq/converge/internal/lb"

// InRotation returns the URLs of the gateway instances the load balancer
// sends requests to now, as in GatewayURLs. Fault tests use it to see a
// dead instance leave rotation, which the balancer's connect retry would
// otherwise hide from any client.
func (s *System) InRotation() []string {
	if s.lbServer == nil {
		return nil
	}
	bal, ok := s.lbServer.Handler.(*lb.Balancer)
	if !ok {
		return nil
	}
	return bal.Healthy()
}
