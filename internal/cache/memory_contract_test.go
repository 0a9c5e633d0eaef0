package cache_test

import (
	"testing"

	"github.com/convergehq/converge/internal/cache"
	"github.com/convergehq/converge/internal/cache/cachetest"
)

func TestMemoryContract(t *testing.T) {
	cachetest.Run(t, func(t *testing.T) func() cache.Cache {
		m := cache.NewMemory(100)
		return func() cache.Cache { return m } // one process: one value
	})
}
