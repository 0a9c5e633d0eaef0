package order

import "sync"

// waiters lets Wait sleep until this process changes an order.
type waiters struct {
	mu sync.Mutex
	m  map[string]map[chan struct{}]struct{}
}

func newWaiters() *waiters { return &waiters{m: make(map[string]map[chan struct{}]struct{})} }

// watch returns a channel closed at the next wake(id), and a func that stops
// watching.
func (w *waiters) watch(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	w.mu.Lock()
	if w.m[id] == nil {
		w.m[id] = make(map[chan struct{}]struct{})
	}
	w.m[id][ch] = struct{}{}
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if set, ok := w.m[id]; ok {
			delete(set, ch)
			if len(set) == 0 {
				delete(w.m, id)
			}
		}
	}
}

func (w *waiters) wake(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.m[id] {
		close(ch)
	}
	delete(w.m, id)
}
