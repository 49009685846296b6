package storetest

import (
	"context"
	"sync"
	"testing"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// CheckAudit wraps s so that every audit event appended through it is
// checked against its type's schema in pkg/audit (AuditEvent.Validate).
// The test fails when it ends if any event was not valid: a harness wraps
// its store once, and every test that drives the code through it checks
// the events that code produces, at no cost to the tests themselves.
//
// Problems are collected and reported from a cleanup, not with t.Errorf
// at the append, because agents' goroutines append events too; events
// appended after the test ended are not checked.
func CheckAudit(t testing.TB, s store.Store) store.Store {
	t.Helper()
	c := &auditChecker{Store: s}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.done = true
		for _, p := range c.problems {
			t.Errorf("invalid audit event %+v: %v", p.ev, p.err)
		}
	})
	return c
}

type auditChecker struct {
	store.Store
	mu       sync.Mutex
	done     bool
	problems []auditProblem
}

type auditProblem struct {
	ev  store.AuditEvent
	err error
}

func (c *auditChecker) AppendAudit(ctx context.Context, events ...store.AuditEvent) error {
	c.mu.Lock()
	for _, e := range events {
		if err := e.Validate(); err != nil && !c.done {
			c.problems = append(c.problems, auditProblem{e, err})
		}
	}
	c.mu.Unlock()
	return c.Store.AppendAudit(ctx, events...)
}
