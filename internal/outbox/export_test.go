package outbox

// SetBeforePublish makes r call f with the size of each batch it has read,
// before publishing it.
func SetBeforePublish(r *Relay, f func(n int)) { r.beforePublish = f }
