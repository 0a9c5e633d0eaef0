package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/convergehq/converge/internal/cluster"
)

// PartCPU is the CPU one part of the cluster topology spent per converged
// order: its processes' user and system time from /proc/PID/stat.
type PartCPU struct {
	Part    string        `json:"part"`
	PerUnit time.Duration `json:"per_unit_ns"`
	// Processes is how many of the part's processes were seen: 0 where
	// the part runs where /proc does not show it (a PostgreSQL on another
	// machine), and PerUnit means nothing.
	Processes int `json:"processes"`
}

// The parts a cluster flow's CPU is split into, in the order printed.
// restOfMachine is the machine's busy time (from /proc/stat) less the
// parts': the kernel's own threads, processes that exited meanwhile,
// other processes.
const (
	partClient    = "load client (converge bench)"
	partLB        = "load balancer"
	partGateways  = "gateways"
	partOrders    = "order services"
	partInventory = "inventory services"
	partBrokers   = "brokers"
	partPostgres  = "PostgreSQL (every postgres process)"
	partRedis     = "Redis (every redis-server process)"
	restOfMachine = "rest of the machine"
)

// partNames are the parts in the order printed, restOfMachine last.
func partNames() []string {
	return []string{partClient, partLB, partGateways, partOrders, partInventory, partBrokers, partPostgres, partRedis, restOfMachine}
}

// partOfRole names the part of a cluster process's role.
func partOfRole(role string) (string, bool) {
	switch role {
	case "lb":
		return partLB, true
	case "gateway":
		return partGateways, true
	case "order":
		return partOrders, true
	case "inventory":
		return partInventory, true
	case "broker":
		return partBrokers, true
	}
	return "", false
}

// partOfComm names the part of one of the machine's servers, by the
// command name in /proc/PID/comm.
func partOfComm(comm string) (string, bool) {
	switch comm {
	case "postgres":
		return partPostgres, true
	case "redis-server":
		return partRedis, true
	}
	return "", false
}

// clockTicks is /proc's unit of CPU time (USER_HZ), 100 a second on
// every Linux architecture converge runs on.
const clockTicks = 100

// partsSample is the CPU time each process of a part has used so far,
// in clock ticks, by part and PID.
type partsSample map[string]map[int]uint64

// sampleParts reads the CPU time of this process (the load client), of
// c's running processes and of the machine's PostgreSQL and Redis
// processes. It returns nil where /proc is missing (not Linux).
func sampleParts(c *cluster.Cluster) (partsSample, error) {
	if _, err := os.Stat("/proc/self/stat"); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	pids := map[int]string{os.Getpid(): partClient}
	for _, p := range c.Processes() {
		if part, ok := partOfRole(p.Role); ok && p.PID() != 0 {
			pids[p.PID()] = part
		}
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue // not a process
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue // it exited meanwhile
		}
		if part, ok := partOfComm(strings.TrimSpace(string(comm))); ok {
			pids[pid] = part
		}
	}
	s := partsSample{}
	for pid, part := range pids {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			continue // it exited meanwhile: its time is not counted
		}
		ticks, err := statTicks(b)
		if err != nil {
			return nil, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		if s[part] == nil {
			s[part] = map[int]uint64{}
		}
		s[part][pid] = ticks
	}
	return s, nil
}

// statTicks returns utime + stime, fields 14 and 15 of a /proc/PID/stat
// line; the command name before them, in parentheses, may hold spaces
// and parentheses of its own.
func statTicks(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name in %q", b)
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("short line %q", b)
	}
	var sum uint64
	for _, f := range fields[11:13] { // field 3 (the state) is fields[0]
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("CPU time %q: %w", f, err)
		}
		sum += v
	}
	return sum, nil
}

// since is the CPU each part used from s to now, per one of units, and
// the rest of machine, the machine's per unit less the parts'. A process
// found only in now started meanwhile and counts whole; one gone from now
// exited, and its time is lost. Nil where either sample is.
func (s partsSample) since(now partsSample, units int, machine time.Duration) []PartCPU {
	if s == nil || now == nil || units <= 0 {
		return nil
	}
	var out []PartCPU
	var sum time.Duration
	names := partNames()
	for _, part := range names[:len(names)-1] {
		var ticks uint64
		for pid, t := range now[part] {
			if before := s[part][pid]; t >= before {
				ticks += t - before
			}
		}
		d := time.Duration(ticks) * time.Second / clockTicks / time.Duration(units)
		sum += d
		out = append(out, PartCPU{Part: part, PerUnit: d, Processes: len(now[part])})
	}
	return append(out, PartCPU{Part: restOfMachine, PerUnit: max(machine-sum, 0)})
}
