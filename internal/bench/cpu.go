package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuSample is the machine's CPU time so far, from /proc/stat: every
// process's, the bench's, the system's and the servers' alike, which is
// what a flow on one machine competes for.
type cpuSample struct {
	at          time.Time
	busy, all   uint64 // clock ticks over all cores
	switches    uint64 // context switches since boot, every CPU's
	cores       int
	unsupported bool // no /proc/stat: not Linux
}

// readCPU reads /proc/stat's summary line (busy is every state's ticks
// but idle, iowait and steal) and its count of context switches.
func readCPU() (cpuSample, error) {
	b, err := os.ReadFile("/proc/stat")
	if errors.Is(err, os.ErrNotExist) {
		return cpuSample{unsupported: true}, nil
	}
	if err != nil {
		return cpuSample{}, err
	}
	return parseProcStat(b, time.Now())
}

func parseProcStat(b []byte, at time.Time) (cpuSample, error) {
	s := cpuSample{at: at}
	sc := bufio.NewScanner(bytes.NewReader(b))
	found := false
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 2 && fields[0] == "ctxt" {
			v, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return cpuSample{}, fmt.Errorf("/proc/stat: %q: %w", sc.Text(), err)
			}
			s.switches = v
			continue
		}
		if len(fields) == 0 || !strings.HasPrefix(fields[0], "cpu") {
			continue
		}
		if fields[0] != "cpu" {
			s.cores++
			continue
		}
		if len(fields) < 6 {
			return cpuSample{}, fmt.Errorf("/proc/stat: short cpu line %q", sc.Text())
		}
		// user nice system idle iowait irq softirq steal guest guest_nice;
		// guest time is counted in user already, and steal, time the
		// hypervisor gave another machine, is not busy here.
		for i, f := range fields[1:min(len(fields), 9)] {
			v, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				return cpuSample{}, fmt.Errorf("/proc/stat: %q: %w", sc.Text(), err)
			}
			s.all += v
			if i != 3 && i != 4 && i != 7 {
				s.busy += v
			}
		}
		found = true
	}
	if err := sc.Err(); err != nil {
		return cpuSample{}, err
	}
	if !found || s.cores == 0 {
		return cpuSample{}, errors.New("/proc/stat: no cpu lines")
	}
	return s, nil
}

// CPU is how busy the machine's cores were while a flow or limit ran.
type CPU struct {
	// Busy is the share of all cores' time spent busy, 0 to 1.
	Busy float64 `json:"busy"`
	// Cores is how many the machine has.
	Cores int `json:"cores"`
	// PerUnit is the busy core time divided by the units of work done
	// (orders converged, commits): the machine's whole CPU cost of one,
	// whichever process spent it.
	PerUnit time.Duration `json:"per_unit_ns"`
	// SwitchesPerUnit is the machine's context switches (how many times
	// its CPUs went from one thread to another, the idle task included,
	// whichever process's) divided by the same units. Zero where
	// /proc/stat has no count.
	SwitchesPerUnit float64 `json:"switches_per_unit"`
}

// since is the CPU used from s to now, per one of units.
func (s cpuSample) since(now cpuSample, units int) CPU {
	if s.unsupported || now.unsupported || now.all <= s.all {
		return CPU{}
	}
	busy := float64(now.busy-s.busy) / float64(now.all-s.all)
	c := CPU{Busy: busy, Cores: now.cores}
	if units > 0 {
		coreTime := busy * float64(now.at.Sub(s.at)) * float64(now.cores)
		c.PerUnit = time.Duration(coreTime / float64(units))
		if s.switches > 0 && now.switches >= s.switches {
			c.SwitchesPerUnit = float64(now.switches-s.switches) / float64(units)
		}
	}
	return c
}
