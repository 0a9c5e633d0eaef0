package role

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// DataLock is an exclusive lock on a data directory, held while a process
// writes there: two processes must never share one broker store or one
// SQLite file set. The kernel drops the lock when the process dies, so a
// crash leaves nothing to clean up.
type DataLock struct {
	f *os.File
}

// LockFile is the name of the lock file in a data directory.
const LockFile = "converge.lock"

// LockDataDir takes the lock of dir, or says which process holds it.
func LockDataDir(dir string) (*DataLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid := strings.TrimSpace(string(holder))
			return nil, fmt.Errorf("data directory %s is in use by another converge (pid %s); stop it or choose another --data", dir, pid)
		}
		return nil, fmt.Errorf("lock data directory %s: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0) // only a hint for the message above
	}
	return &DataLock{f: f}, nil
}

// Release lets the directory go.
func (l *DataLock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := errors.Join(syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN), l.f.Close())
	l.f = nil
	return err
}
