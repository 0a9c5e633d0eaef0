package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/broker/brokertest"
	"github.com/convergehq/converge/internal/dlq"
	"github.com/convergehq/converge/internal/system"
)

const (
	dlqTestKey      = "cli-api-key"
	dlqTestAdminKey = "cli-admin-key"
)

// startDLQSystem starts an embedded system and gives it two dead letters:
// a malformed message and an event of a type nobody knows, both on
// orders.created.
func startDLQSystem(t *testing.T) *system.System {
	t.Helper()
	cfg := system.DefaultConfig()
	cfg.Addr, cfg.DataDir, cfg.BrokerPort, cfg.Seed = "127.0.0.1:0", t.TempDir(), 0, false
	cfg.APIKey, cfg.AdminKey = dlqTestKey, dlqTestAdminKey
	ctx := context.Background()
	sys, err := system.Start(ctx, cfg, brokertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := sys.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	conn, err := broker.Connect(ctx, sys.BrokerURL, "test-publisher", brokertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.PublishBatch(ctx, []broker.Message{
		{ID: "p-1", Subject: "orders.created", Data: []byte("this is not an event")},
		{ID: "p-2", Subject: "orders.created", Data: []byte(`{"specversion":"1.0","id":"x","source":"s","type":"io.converge.order.shipped","subject":"o","schemaversion":"1","data":{}}`)},
	}); err != nil {
		t.Fatal(err)
	}
	return sys
}

// dlqCLI runs `converge dlq args... --url LB` with the admin key in the
// environment, as an operator's shell would have it.
func dlqCLI(t *testing.T, sys *system.System, args ...string) (string, error) {
	t.Helper()
	env := map[string]string{"CONVERGE_ADMIN_KEY": dlqTestAdminKey, "CONVERGE_URL": sys.LBURL}
	var out bytes.Buffer
	err := run(context.Background(), append([]string{"dlq"}, args...), func(k string) string { return env[k] }, &out, &out)
	return out.String(), err
}

func mustDLQ(t *testing.T, sys *system.System, args ...string) string {
	t.Helper()
	out, err := dlqCLI(t, sys, args...)
	if err != nil {
		t.Fatalf("converge dlq %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// waitSeqs waits until `dlq ls --json` lists exactly want.
func waitSeqs(t *testing.T, sys *system.System, want ...uint64) []dlq.Letter {
	t.Helper()
	until := time.Now().Add(15 * time.Second)
	for {
		var page dlq.Page
		if err := json.Unmarshal([]byte(mustDLQ(t, sys, "ls", "--json")), &page); err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for _, l := range page.Items {
			got = append(got, l.Seq)
		}
		if slices.Equal(got, want) {
			return page.Items
		}
		if time.Now().After(until) {
			t.Fatalf("dead letters %v, want %v", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDLQCommands(t *testing.T) {
	sys := startDLQSystem(t)
	waitSeqs(t, sys, 1, 2)

	out := mustDLQ(t, sys, "ls")
	for _, want := range []string{"SEQ", "CONSUMER", "inventory", "malformed", "io.converge.order.shipped"} {
		if !strings.Contains(out, want) {
			t.Errorf("ls: no %q in\n%s", want, out)
		}
	}
	if out := mustDLQ(t, sys, "ls", "--consumer", "order"); strings.TrimSpace(out) != "no dead letters" {
		t.Errorf("ls --consumer order: %q", out)
	}
	if out := mustDLQ(t, sys, "ls", "--limit", "1"); !strings.Contains(out, "more: converge dlq ls --after 1") {
		t.Errorf("ls --limit 1: no next page in\n%s", out)
	}

	out = mustDLQ(t, sys, "show", "1")
	for _, want := range []string{"orders.created, stream ORDERS #1", "p-1", "Converge-Error:", "this is not an event"} {
		if !strings.Contains(out, want) {
			t.Errorf("show 1: no %q in\n%s", want, out)
		}
	}
	var l dlq.Letter
	if err := json.Unmarshal([]byte(mustDLQ(t, sys, "show", "--json", "2")), &l); err != nil || l.Type != "io.converge.order.shipped" || l.Payload == nil {
		t.Errorf("show --json 2: %+v, %v", l, err)
	}

	if out := mustDLQ(t, sys, "discard", "1"); strings.TrimSpace(out) != "discarded dead letter 1" {
		t.Errorf("discard 1: %q", out)
	}
	// Replayed, the unknown event is dead-lettered again, as dead letter 3.
	if out := mustDLQ(t, sys, "replay", "2"); !strings.HasPrefix(out, "replayed dead letter 2 to orders.created (ORDERS #") {
		t.Errorf("replay 2: %q", out)
	}
	waitSeqs(t, sys, 3)
	if out := mustDLQ(t, sys, "replay", "--all", "--json"); strings.TrimSpace(out) != `{"replayed":[3]}` {
		t.Errorf("replay --all --json: %q", out)
	}
	waitSeqs(t, sys, 4)
	if out := mustDLQ(t, sys, "discard", "--reason", "UNKNOWN EVENT"); strings.TrimSpace(out) != "discarded 1 dead letters: 4" {
		t.Errorf("discard --reason: %q", out)
	}
	if out := mustDLQ(t, sys, "replay", "--consumer", "inventory"); strings.TrimSpace(out) != "no dead letters matched; nothing replayed" {
		t.Errorf("replay with nothing left: %q", out)
	}
}

// Bad input is one readable line and a non-zero exit; it changes nothing.
func TestDLQBadInput(t *testing.T) {
	sys := startDLQSystem(t)
	waitSeqs(t, sys, 1, 2)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"show"}, 2, "give one dead letter's SEQ"},
		{[]string{"show", "abc"}, 2, `"abc" is not a dead letter's SEQ`},
		{[]string{"show", "99"}, 1, "not found"},
		{[]string{"replay"}, 2, "give the SEQs"},
		{[]string{"replay", "1", "--all"}, 2, "not both"},
		{[]string{"discard", "--all", "--consumer", "inventory"}, 2, "not both"},
		{[]string{"ls", "--limit", "0"}, 2, "--limit must be 1 to"},
		{[]string{"ls", "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"purge"}, 2, `unknown command "purge"`},
		{[]string{}, 2, "no command given"},
		{[]string{"ls", "--admin-key", "wrong"}, 1, "(HTTP 401)"},
		{[]string{"ls", "--admin-key", dlqTestKey}, 1, "(HTTP 403)"},
		{[]string{"ls", "--url", "localhost:8080"}, 2, "is not an http(s) URL"},
	} {
		out, err := dlqCLI(t, sys, tc.args...)
		var stderr bytes.Buffer
		code := report(&stderr, err)
		line := stderr.String()
		if code != tc.code || !strings.Contains(line, tc.want) || strings.Count(line, "\n") != 1 {
			t.Errorf("dlq %v: exit %d, stderr %q; want exit %d and one line with %q (stdout %q)", tc.args, code, line, tc.code, tc.want, out)
		}
	}
	waitSeqs(t, sys, 1, 2) // nothing changed
}
