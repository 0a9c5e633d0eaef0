package system

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/convergehq/converge/internal/role"
	"github.com/convergehq/converge/internal/ui"
)

// parts lists every part of the running system for the live page (/ui/),
// each by the name Stop and Restart take.
func (s *System) parts() []ui.Component {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ui.Component
	if s.LBURL != "" {
		out = append(out, ui.Component{Name: "lb", Role: "lb", URL: s.LBURL})
	}
	for i, u := range s.GatewayURLs {
		out = append(out, ui.Component{Name: gatewayName(i), Role: "gateway", URL: u, Control: true})
	}
	out = append(out,
		ui.Component{Name: s.ordCfg.Instance, Role: "order", URL: s.OrderURL, Control: true},
		ui.Component{Name: s.invCfg.Instance, Role: "inventory", URL: s.InventoryURL, Control: true})
	if s.BrokerMetricsURL != "" {
		out = append(out, ui.Component{Name: "broker", Role: "broker", URL: s.BrokerMetricsURL, Control: true})
	}
	return out
}

func gatewayName(i int) string { return "gateway-" + strconv.Itoa(i+1) }

// gatewayIndex is i of the name "gateway-<i+1>", or -1.
func (s *System) gatewayIndex(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := strconv.Atoi(strings.TrimPrefix(name, "gateway-"))
	if !strings.HasPrefix(name, "gateway-") || err != nil || n < 1 || n > len(s.GatewayURLs) {
		return -1
	}
	return n - 1
}

// Stop stops a part by its name on the live page: "broker" (the embedded
// one), "gateway-<n>", or a service instance ("order-1", "inventory-1").
// A gateway stops at once, as KillGateway's does (the request that asks
// may be one it carries); a service stops as in Shutdown, flushing its
// outbox. The last gateway running is not stopped: the page is served
// through the gateways. Stopping a stopped part does nothing.
func (s *System) Stop(ctx context.Context, name string) error {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	if s.isStopped() {
		return errors.New("the system is shutting down")
	}
	if name == "broker" && s.BrokerMetricsURL != "" {
		s.StopBroker()
		return nil
	}
	if i := s.gatewayIndex(name); i >= 0 {
		s.mu.Lock()
		gw, running := s.gateways[i], 0
		for _, g := range s.gateways {
			if g != nil {
				running++
			}
		}
		if gw != nil && running == 1 {
			s.mu.Unlock()
			return fmt.Errorf("%s is the last gateway running, and the page is served through the gateways", name)
		}
		s.gateways[i] = nil
		s.mu.Unlock()
		if gw == nil {
			return nil
		}
		return errors.Join(gw.Kill(), gw.Shutdown(ctx))
	}
	svc := s.service(name)
	if svc == nil {
		return fmt.Errorf("no part %q", name)
	}
	s.mu.Lock()
	r := *svc
	*svc = nil
	s.mu.Unlock()
	if r == nil {
		return nil
	}
	r.Drain()
	return r.Shutdown(ctx)
}

// Restart starts a part Stop stopped, on the address it had. Starting a
// running part does nothing.
func (s *System) Restart(name string) error {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	if s.isStopped() {
		return errors.New("the system is shutting down")
	}
	ctx := context.Background() // what starts here lives until Shutdown
	if name == "broker" && s.BrokerMetricsURL != "" {
		return s.StartBroker()
	}
	if i := s.gatewayIndex(name); i >= 0 {
		s.mu.Lock()
		running, addr := s.gateways[i] != nil, hostPort(s.GatewayURLs[i])
		s.mu.Unlock()
		if running {
			return nil
		}
		cfg := s.gwCfg
		cfg.Addr = addr
		gw, err := s.startGateway(ctx, cfg, i)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		s.watch(gw)
		s.mu.Lock()
		s.gateways[i] = gw
		s.mu.Unlock()
		return nil
	}
	svc := s.service(name)
	if svc == nil {
		return fmt.Errorf("no part %q", name)
	}
	s.mu.Lock()
	running := *svc != nil
	s.mu.Unlock()
	if running {
		return nil
	}
	var (
		r   *role.Service
		err error
	)
	if name == s.ordCfg.Instance {
		r, err = s.startOrder(ctx)
	} else {
		r, err = s.startInventory(ctx)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	s.watch(r)
	s.mu.Lock()
	*svc = r
	s.mu.Unlock()
	return nil
}

// service is the field that holds the service instance called name.
func (s *System) service(name string) **role.Service {
	switch name {
	case s.ordCfg.Instance:
		return &s.order
	case s.invCfg.Instance:
		return &s.inventory
	}
	return nil
}

func (s *System) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// hostPort is the host:port of a base URL.
func hostPort(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	return u.Host
}
