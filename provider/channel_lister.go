// ChannelLister: the optional interface a channel store implements to
// enumerate its channels.

package provider

import "context"

// ChannelLister lists every channel the store holds a value for, so that
// cleanup re-reads every channel that may point at an image, not only the
// ones its policy names. Channels never set are not listed; the order is
// unspecified.
type ChannelLister interface {
	ListChannels(ctx context.Context) ([]string, error)
}
