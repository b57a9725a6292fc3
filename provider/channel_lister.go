// ChannelLister and RequestRetrier: optional interfaces of channel stores
// and of drivers whose cloud SDK retries each request.

package provider

import "context"

// ChannelLister lists every channel the store holds a value for, so that
// cleanup re-reads every channel that may point at an image, not only the
// ones its policy names. Channels never set are not listed; the order is
// unspecified.
type ChannelLister interface {
	ListChannels(ctx context.Context) ([]string, error)
}

// RequestRetrier is implemented by a driver that retries each of its API
// requests itself (awsec2 and hetzner, through their cloud SDK's retryer),
// when RetriesRequests reports true. The SDK then runs that driver's calls
// once: retrying a whole driver call, which makes several requests, on top
// of per-request retries would multiply the attempts (and re-run requests
// that had succeeded). Without it the SDK retries whole calls that fail
// with ErrUnavailable or ErrThrottled, with its backoff.
type RequestRetrier interface {
	RetriesRequests() bool
}
