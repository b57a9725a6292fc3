// Hcloud errors and action failures mapped to portable provider codes.

package hetzner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/crabbox/crabbox-go/provider"
)

// mapErr wraps a raw hcloud error with its portable code, once. A
// cancelled or expired context is returned without a code, so
// errors.Is(err, context.Canceled) holds and nobody retries it.
func mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var pe *provider.Error
	if errors.As(err, &pe) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("hetzner: %s: %w", op, err)
	}
	return provider.Wrap(classify(err), fmt.Errorf("hetzner: %s: %w", op, err))
}

// classify returns the portable code of err: by its Hetzner error code
// when it has one (the API's statuses do not always follow its Errors
// table, https://docs.hetzner.cloud/#errors), by its HTTP status only for
// an unknown code.
func classify(err error) error {
	var apiErr hcloud.Error
	if errors.As(err, &apiErr) {
		if code := codeClass(apiErr.Code); code != nil {
			return code
		}
		if r := apiErr.Response(); r != nil && r.Response != nil {
			return provider.ClassifyHTTPStatus(r.StatusCode)
		}
		return provider.ErrUnavailable
	}
	var argErr hcloud.ArgumentError
	if errors.As(err, &argErr) {
		return provider.ErrInvalidArgument
	}
	var netErr net.Error
	switch {
	case errors.Is(err, hcloud.ErrStatusCode):
		return provider.ErrUnavailable
	case errors.As(err, &netErr), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return provider.ErrUnavailable
	}
	return provider.ErrUnavailable
}

// codeClass maps a Hetzner error code to its portable code; nil when the
// code is unknown.
func codeClass(code hcloud.ErrorCode) error {
	switch code {
	case hcloud.ErrorCodeNotFound:
		return provider.ErrNotFound
	// locked and conflict are transient; releases and deletes wait them
	// out (see unlocked), other calls report them.
	case hcloud.ErrorCodeConflict, hcloud.ErrorCodeLocked, hcloud.ErrorCodeUniquenessError,
		hcloud.ErrorCodeProtected, hcloud.ErrorCodeResourceInUse, hcloud.ErrorCodeServerNotStopped:
		return provider.ErrConflict
	case hcloud.ErrorCodeResourceUnavailable,
		hcloud.ErrorCodePlacementError, hcloud.ErrorCodeNoSpaceLeftInLocation,
		"server_type_not_available", "location_not_available":
		return provider.ErrCapacity
	case hcloud.ErrorCodeResourceLimitExceeded, "dedicated_core_limit",
		"dedicated_core_limit_exceeded", "server_limit_exceeded":
		// project limits: another type counts against the same limit
		return provider.ErrQuota
	case hcloud.ErrorCodeRateLimitExceeded:
		return provider.ErrThrottled
	case hcloud.ErrorCodeServiceError, hcloud.ErrorCodeMaintenance, hcloud.ErrorCodeServerError,
		hcloud.ErrorCodeBadGateway, hcloud.ErrorCodeTimeout, hcloud.ErrorCodeUnknownError,
		hcloud.ErrorCodeRobotUnavailable, "unavailable":
		return provider.ErrUnavailable
	case hcloud.ErrorCodeForbidden, hcloud.ErrorCodeUnauthorized, hcloud.ErrorCodeResourceLocked, "token_readonly":
		return provider.ErrPermission
	case hcloud.ErrorCodeInvalidInput, hcloud.ErrorCodeJSONError, hcloud.ErrorCodeInvalidServerType:
		return provider.ErrInvalidArgument
	case hcloud.ErrorUnsupportedError, hcloud.ErrorDeprecatedAPIEndpoint:
		return provider.ErrUnsupported
	}
	return nil
}

// actionClass maps the error code of a failed action to a portable code.
// An action failed after the request was accepted, so only capacity,
// permission and input problems keep their meaning; anything else (the
// usual server_error, action_failed, ...) is a backend failure that a new
// attempt may not repeat: ErrUnavailable.
func actionClass(code string) error {
	switch c := codeClass(hcloud.ErrorCode(code)); c {
	case provider.ErrCapacity, provider.ErrQuota, provider.ErrPermission, provider.ErrInvalidArgument:
		return c
	}
	return provider.ErrUnavailable
}

// ambiguous reports whether a failed create may nevertheless have created
// the resource: transient backend errors, timeouts, broken connections and
// cancelled calls.
func ambiguous(err error) bool {
	return errors.Is(err, provider.ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
