package cache_test

import (
	"testing"

	"github.com/convergehq/converge/internal/cache/cachetest"
)

func TestMemoryContract(t *testing.T) { cachetest.Run(t, cachetest.Memory) }
