package order

import "sync"

// waiters lets Wait sleep until this process changes an order.
type waiters struct {
	mu sync.Mutex
	m  map[string]map[*watch]struct{}
}

// watch is one Wait's interest in one order. done is closed at the next
// change; when the change was committed here and is known in full, order
// holds the order as that commit left it (written before done is closed).
type watch struct {
	done  chan struct{}
	order *Order
}

func newWaiters() *waiters { return &waiters{m: make(map[string]map[*watch]struct{})} }

// watch returns a watch ended by the next wake or settle of id, and a func
// that stops watching.
func (w *waiters) watch(id string) (*watch, func()) {
	wt := &watch{done: make(chan struct{})}
	w.mu.Lock()
	if w.m[id] == nil {
		w.m[id] = make(map[*watch]struct{})
	}
	w.m[id][wt] = struct{}{}
	w.mu.Unlock()
	return wt, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if set, ok := w.m[id]; ok {
			delete(set, wt)
			if len(set) == 0 {
				delete(w.m, id)
			}
		}
	}
}

// wake ends the watches of id: the order changed, and a Wait reads it again.
func (w *waiters) wake(id string) { w.end(id, nil) }

// settle ends the watches of o.ID with o, the order as a commit of this
// process left it, so that a Wait answers without reading it again.
func (w *waiters) settle(o Order) { w.end(o.ID, &o) }

func (w *waiters) end(id string, o *Order) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for wt := range w.m[id] {
		wt.order = o
		close(wt.done)
	}
	delete(w.m, id)
}
