// AWS error codes and HTTP statuses mapped to portable provider codes.

package awsec2

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/crabbox/crabbox-go/provider"
)

// codeMap maps AWS error codes (EC2 and SSM) to portable provider codes. It is
// consulted once, in mapErr, where a raw SDK error is first seen.
var codeMap = map[string]error{
	// not found
	"InvalidInstanceID.NotFound":       provider.ErrNotFound,
	"InvalidAMIID.NotFound":            provider.ErrNotFound,
	"InvalidAMIID.Unavailable":         provider.ErrNotFound,
	"InvalidSnapshot.NotFound":         provider.ErrNotFound,
	"InvalidKeyPair.NotFound":          provider.ErrNotFound,
	"InvalidGroup.NotFound":            provider.ErrNotFound,
	"InvalidSubnetID.NotFound":         provider.ErrNotFound,
	"InvalidVpcID.NotFound":            provider.ErrNotFound,
	"InvalidLaunchTemplateId.NotFound": provider.ErrNotFound,
	"ParameterNotFound":                provider.ErrNotFound,
	"ParameterVersionNotFound":         provider.ErrNotFound,
	// conflicts with the current state
	"InvalidKeyPair.Duplicate":    provider.ErrConflict,
	"InvalidGroup.Duplicate":      provider.ErrConflict,
	"InvalidPermission.Duplicate": provider.ErrConflict,
	"InvalidAMIName.Duplicate":    provider.ErrConflict,
	"ParameterAlreadyExists":      provider.ErrConflict,
	"IdempotentParameterMismatch": provider.ErrConflict,
	// RunInstances with a token whose instance was terminated: the token
	// can never launch again (it stays bound for at least 24 hours).
	"IdempotentInstanceTerminated": provider.ErrConflict,
	"OperationNotPermitted":        provider.ErrConflict,
	"IncorrectInstanceState":       provider.ErrConflict,
	"IncorrectState":               provider.ErrConflict,
	"InvalidSnapshot.InUse":        provider.ErrConflict,
	// capacity: the SDK moves on to the next type
	"InsufficientInstanceCapacity": provider.ErrCapacity,
	"InsufficientCapacity":         provider.ErrCapacity,
	"InsufficientHostCapacity":     provider.ErrCapacity,
	"Unsupported":                  provider.ErrCapacity, // type not offered in the zone
	"SpotMaxPriceTooLow":           provider.ErrCapacity,
	"ReservationCapacityExceeded":  provider.ErrCapacity,
	// account quotas: every type of a class counts against the same
	// limit (vCPU quotas are per family group), so no fallback
	"InstanceLimitExceeded":        provider.ErrQuota,
	"VcpuLimitExceeded":            provider.ErrQuota,
	"MaxSpotInstanceCountExceeded": provider.ErrQuota,
	"MaxIOPSLimitExceeded":         provider.ErrQuota,
	"PendingVerification":          provider.ErrPermission, // the account is not yet allowed to launch
	// throttling
	"RequestLimitExceeded":      provider.ErrThrottled,
	"Throttling":                provider.ErrThrottled,
	"ThrottlingException":       provider.ErrThrottled,
	"TooManyUpdates":            provider.ErrThrottled,
	"RequestThrottled":          provider.ErrThrottled,
	"RequestThrottledException": provider.ErrThrottled,
	// transient backend failures
	"InternalError":       provider.ErrUnavailable,
	"InternalFailure":     provider.ErrUnavailable,
	"InternalServerError": provider.ErrUnavailable,
	"Unavailable":         provider.ErrUnavailable,
	"ServiceUnavailable":  provider.ErrUnavailable,
	// permissions and credentials
	"UnauthorizedOperation":       provider.ErrPermission,
	"AccessDenied":                provider.ErrPermission,
	"AccessDeniedException":       provider.ErrPermission,
	"AuthFailure":                 provider.ErrPermission,
	"Blocked":                     provider.ErrPermission,
	"OptInRequired":               provider.ErrPermission,
	"UnrecognizedClientException": provider.ErrPermission,
	"InvalidClientTokenId":        provider.ErrPermission,
	"SignatureDoesNotMatch":       provider.ErrPermission,
	"ExpiredToken":                provider.ErrPermission,
	// the backend lacks the operation
	"UnsupportedOperation":      provider.ErrUnsupported,
	"InvalidAction":             provider.ErrUnsupported,
	"NotImplemented":            provider.ErrUnsupported,
	"UnknownOperationException": provider.ErrUnsupported,
	// invalid requests
	"MissingParameter":                     provider.ErrInvalidArgument,
	"ValidationException":                  provider.ErrInvalidArgument,
	"ParameterLimitExceeded":               provider.ErrInvalidArgument,
	"ParameterVersionLabelLimitExceeded":   provider.ErrInvalidArgument,
	"HierarchyLevelLimitExceededException": provider.ErrInvalidArgument,
	"InvalidKeyPair.Format":                provider.ErrInvalidArgument,
	"DryRunOperation":                      provider.ErrInvalidArgument,
}

// mapErr wraps a raw SDK error with its portable code. Context cancellation
// is returned unwrapped so errors.Is(err, context.Canceled) holds and nobody
// retries it.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	var pe *provider.Error
	if errors.As(err, &pe) {
		return err // already mapped
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return provider.Wrap(classify(err), err)
}

// ambiguous reports whether a create that failed with err may have taken
// effect all the same: the caller's context ended while the call was in
// flight, the response was lost, or the service failed on its side. A
// request EC2 refused (a client error, throttling) made nothing.
func ambiguous(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	return errors.Is(classify(err), provider.ErrUnavailable)
}

func classify(err error) error {
	// No credentials (an empty chain, no IMDS role, an expired SSO
	// session): the request was never signed or sent, and retrying cannot
	// fix it.
	var ce *credentialsError
	var se *v4.SigningError
	if errors.As(err, &ce) || errors.As(err, &se) {
		return provider.ErrPermission
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code := ae.ErrorCode()
		if c, ok := codeMap[code]; ok {
			return c
		}
		switch {
		case strings.HasSuffix(code, "LimitExceeded"):
			// Account limits (VolumeLimitExceeded, SnapshotLimitExceeded,
			// AddressLimitExceeded, ...; RequestLimitExceeded, throttling,
			// is in codeMap): the next type counts against the same limit.
			return provider.ErrQuota
		case strings.HasSuffix(code, ".NotFound"):
			return provider.ErrNotFound
		case strings.HasSuffix(code, ".Duplicate"):
			return provider.ErrConflict
		case strings.HasPrefix(code, "InvalidParameter"), strings.HasPrefix(code, "Malformed"),
			strings.HasSuffix(code, ".Malformed"), strings.HasPrefix(code, "Invalid"):
			return provider.ErrInvalidArgument
		}
		if ae.ErrorFault() == smithy.FaultServer || httpStatus(err) >= 500 {
			return provider.ErrUnavailable
		}
		return provider.ErrInvalidArgument
	}
	if s := httpStatus(err); s == 429 || s >= 500 {
		return provider.ClassifyHTTPStatus(s) // ErrThrottled, ErrUnavailable
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return provider.ErrUnavailable
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return provider.ErrUnavailable
	}
	// Transport failures the SDK reports without a status (connection reset,
	// EOF): transient.
	return provider.ErrUnavailable
}

func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// apiCode returns the AWS error code of err, or "".
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// finalCapacityRetryer is the AWS SDK retryer of the driver's EC2 clients
// with capacity and quota errors made final. EC2 answers
// InsufficientInstanceCapacity (and the other Insufficient*Capacity codes)
// with HTTP 500, which the SDK's standard retryer retries like any server
// error: three attempts, with backoff, before the SDK's fallback to the
// next type could run. The only useful answer to a capacity or quota error
// is that fallback (or none), so the SDK retryer leaves them alone; it
// still retries throttling and transient failures.
type finalCapacityRetryer struct{ aws.Retryer }

// IsErrorRetryable implements aws.Retryer.
func (r finalCapacityRetryer) IsErrorRetryable(err error) bool {
	if capacityOrQuota(err) {
		return false
	}
	return r.Retryer.IsErrorRetryable(err)
}

// GetAttemptToken implements aws.RetryerV2.
func (r finalCapacityRetryer) GetAttemptToken(ctx context.Context) (func(error) error, error) {
	if v2, ok := r.Retryer.(aws.RetryerV2); ok {
		return v2.GetAttemptToken(ctx)
	}
	return r.GetInitialToken(), nil
}

// capacityOrQuota reports whether err carries an AWS code the driver maps
// to ErrCapacity or ErrQuota.
func capacityOrQuota(err error) bool {
	c := codeMap[apiCode(err)]
	return c == provider.ErrCapacity || c == provider.ErrQuota
}

// finalCapacity is the ec2.Options function that wraps the client's
// retryer in finalCapacityRetryer.
func finalCapacity(eo *ec2.Options) {
	if eo.Retryer != nil {
		eo.Retryer = finalCapacityRetryer{eo.Retryer}
	}
}

// credentialsError marks an error of the credential chain (see
// markedCredentials): the SDK reports it as plain text ("get identity:
// get credentials: ..."), which classify could not tell from a transient
// failure.
type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

// markedCredentials is the caller's credential provider with its errors
// marked as credentialsError.
type markedCredentials struct{ p aws.CredentialsProvider }

func (m markedCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := m.p.Retrieve(ctx)
	if err != nil && ctx.Err() == nil {
		return c, &credentialsError{err}
	}
	return c, err
}
