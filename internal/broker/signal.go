package broker

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// Signal publishes data on subject with plain NATS: no stream keeps it and
// nobody acknowledges it. It is for hints that may be lost, such as "this
// order changed" to wake requests held on other instances, never for
// events.
func (c *Conn) Signal(subject string, data []byte) error {
	if err := c.nc.Publish(subject, data); err != nil {
		return fmt.Errorf("signal %s: %w", subject, err)
	}
	return nil
}

// OnSignal calls f with the data of every signal on subject until the
// returned stop is called. Signals sent while disconnected are lost.
func (c *Conn) OnSignal(subject string, f func(data []byte)) (stop func() error, err error) {
	sub, err := c.nc.Subscribe(subject, func(m *nats.Msg) { f(m.Data) })
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	return sub.Unsubscribe, nil
}
