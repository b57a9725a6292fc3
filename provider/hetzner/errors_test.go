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
