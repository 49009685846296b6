package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
)

// requestID returns the request's Idempotency-Key, checked: 1 to 128
// characters of letters, digits and "-_.:" ("" when it sent none).
func requestID(r *http.Request) (string, error) {
	id := r.Header.Get(adminapi.IdempotencyHeader)
	if id == "" {
		return "", nil
	}
	if len(id) > adminapi.MaxRequestIDLen {
		return "", invalidf("header %s: longer than %d characters", adminapi.IdempotencyHeader, adminapi.MaxRequestIDLen)
	}
	if i := strings.IndexFunc(id, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.:", c))
	}); i >= 0 {
		return "", invalidf("header %s: character %d is not a letter, digit or one of -_.:", adminapi.IdempotencyHeader, i+1)
	}
	return id, nil
}

// origin is who a mutation comes from: the actor and the request's
// Idempotency-Key (checked by admin before the handler runs).
func origin(r *http.Request, actor string) state.Origin {
	id, _ := requestID(r)
	return state.Origin{Actor: actor, RequestID: id}
}

// appliedError answers a request whose Idempotency-Key was applied before.
func appliedError(err error) (*apiError, bool) {
	var ae *state.AppliedError
	if !errors.As(err, &ae) {
		return nil, false
	}
	seqs := make([]string, len(ae.Events))
	for i, e := range ae.Events {
		seqs[i] = fmt.Sprint(e.Seq)
	}
	msg := fmt.Sprintf("request %s was already applied; not applied again (audit records %s: 'cordonctl audit --request %s')",
		ae.RequestID, strings.Join(seqs, ", "), ae.RequestID)
	return &apiError{http.StatusConflict, adminapi.CodeAlreadyApplied, msg}, true
}

// refusedError answers a mutation the state refused, with its message.
func refusedError(e *state.Refused) *apiError {
	switch {
	case errors.Is(e.Kind, store.ErrNotFound):
		return &apiError{http.StatusNotFound, adminapi.CodeNotFound, e.Msg}
	case errors.Is(e.Kind, store.ErrInUse):
		return &apiError{http.StatusConflict, adminapi.CodeInUse, e.Msg}
	case errors.Is(e.Kind, store.ErrTokenInvalid):
		return &apiError{http.StatusUnauthorized, adminapi.CodeTokenInvalid, e.Msg}
	case errors.Is(e.Kind, store.ErrDisabled), errors.Is(e.Kind, state.ErrSignInFailed):
		return &apiError{http.StatusUnauthorized, adminapi.CodeUnauthorized, e.Msg}
	case errors.Is(e.Kind, state.ErrForbidden):
		return &apiError{http.StatusForbidden, adminapi.CodeForbidden, e.Msg}
	case errors.Is(e.Kind, state.ErrDeviceRevoked):
		return &apiError{http.StatusForbidden, adminapi.CodeDeviceRevoked, e.Msg}
	}
	return &apiError{http.StatusConflict, adminapi.CodeConflict, e.Msg}
}
