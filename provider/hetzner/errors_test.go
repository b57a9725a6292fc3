// Tests of errors.go: hcloud errors mapped to portable codes.

package hetzner_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
)

func TestErrorMapping(t *testing.T) {
	cases := []struct {
		code string
		want error
	}{
		{"not_found", provider.ErrNotFound},
		{"conflict", provider.ErrConflict},
		{"locked", provider.ErrConflict},
		{"uniqueness_error", provider.ErrConflict},
		{"protected", provider.ErrConflict},
		{"rate_limit_exceeded", provider.ErrThrottled},
		{"service_error", provider.ErrUnavailable},
		{"timeout", provider.ErrUnavailable},
		{"server_error", provider.ErrUnavailable},
		{"maintenance", provider.ErrUnavailable},
		{"forbidden", provider.ErrPermission},
		{"unauthorized", provider.ErrPermission},
		{"invalid_input", provider.ErrInvalidArgument},
		{"json_error", provider.ErrInvalidArgument},
		{"resource_limit_exceeded", provider.ErrQuota},
		{"unsupported_error", provider.ErrUnsupported},
		{"some_new_code", provider.ErrUnavailable},
	}
	e := newEnv(t, hcloudfake.Options{}, 0)
	for _, c := range cases {
		e.fake.InjectFault(hcloudfake.Fault{Method: "GET", Path: "/servers", Code: c.code})
		_, err := e.d.ListMachines(context.Background(), nil)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.code, err, c.want)
		}
		var pe *provider.Error
		if !errors.As(err, &pe) || pe.Code != c.want {
			t.Errorf("%s: not a single provider.Error with code %v: %#v", c.code, c.want, err)
		}
	}
	// An error without a code falls back to its HTTP status.
	e.fake.InjectFault(hcloudfake.Fault{Method: "GET", Path: "/servers", Code: "", Status: http.StatusBadGateway})
	if _, err := e.d.ListMachines(context.Background(), nil); !errors.Is(err, provider.ErrUnavailable) {
		t.Errorf("bare 502: %v", err)
	}
}

// The API does not always answer with the status its Errors table gives a
// code (resource_unavailable came with 412, not 403): the driver
// classifies by the code, so a status that says otherwise changes nothing.
func TestErrorMappingUsesCodeNotStatus(t *testing.T) {
	cases := []struct {
		code   string
		status int
		want   error
	}{
		{"resource_unavailable", http.StatusPreconditionFailed, provider.ErrCapacity},
		{"resource_unavailable", http.StatusForbidden, provider.ErrCapacity}, // the table's status, permission by status
		{"resource_limit_exceeded", http.StatusForbidden, provider.ErrQuota},
		{"resource_limit_exceeded", http.StatusUnprocessableEntity, provider.ErrQuota},
		{"placement_error", http.StatusServiceUnavailable, provider.ErrCapacity},
		{"locked", http.StatusConflict, provider.ErrConflict},
		{"rate_limit_exceeded", http.StatusServiceUnavailable, provider.ErrThrottled},
		{"not_found", http.StatusInternalServerError, provider.ErrNotFound},
		{"invalid_input", http.StatusUnprocessableEntity, provider.ErrInvalidArgument},
		{"maintenance", http.StatusForbidden, provider.ErrUnavailable},
		// In the table (403) but unknown to hcloud-go's constants: by its
		// code a read-only token, never a retryable 5xx.
		{"token_readonly", http.StatusInternalServerError, provider.ErrPermission},
	}
	e := newEnv(t, hcloudfake.Options{}, 0)
	for _, c := range cases {
		e.fake.InjectFault(hcloudfake.Fault{Method: "GET", Path: "/servers", Code: c.code, Status: c.status})
		_, err := e.d.ListMachines(context.Background(), nil)
		var pe *provider.Error
		if !errors.As(err, &pe) || pe.Code != c.want {
			t.Errorf("%s with status %d: %v, want %v", c.code, c.status, err, c.want)
		}
	}
}
