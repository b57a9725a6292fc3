// Error mapping: every raw backend error gets exactly one provider code,
// once, where it is first seen; context errors pass through unmapped.

package refdriver

import (
	"context"
	"errors"

	"github.com/crabbox/crabbox-go/provider"
)

// mapErr wraps a raw backend error with its portable code. It is called once
// per backend call, on the error the call returned. Context cancellation
// and deadlines are returned as they are, so errors.Is(err,
// context.Canceled) holds and the SDK does not retry them as
// provider.ErrUnavailable. An error that already carries a code is not
// wrapped again.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var pe *provider.Error
	if errors.As(err, &pe) {
		return err
	}
	var ae *apiError
	if errors.As(err, &ae) {
		switch ae.Code {
		case "capacity":
			return provider.Wrap(provider.ErrCapacity, err)
		case "quota":
			return provider.Wrap(provider.ErrQuota, err)
		}
		return provider.Wrap(provider.ClassifyHTTPStatus(ae.Status), err)
	}
	// Anything else (transport failures) is transient.
	return provider.Wrap(provider.ErrUnavailable, err)
}

func notFound(kind, id string) error { return apiErrorf(404, "%s %q not found", kind, id) }
