// Lease options: the words a lease is described in (classes, architectures,
// channels, image sources) and the LeaseOption values Warmup takes.

package crabbox

import (
	"fmt"
	"strings"
	"time"

	"github.com/crabbox/crabbox-go/provider"
)

// Lease classes (the driver vocabulary of package provider, re-exported).
// Each provider maps a class to an ordered fallback list of machine types
// (provider.Driver.MachineTypes).
const (
	ClassTiny     = provider.ClassTiny
	ClassSmall    = provider.ClassSmall
	ClassStandard = provider.ClassStandard
	ClassFast     = provider.ClassFast
	ClassLarge    = provider.ClassLarge
	ClassBeast    = provider.ClassBeast
)

// Classes lists the lease classes, smallest first (a fresh copy).
func Classes() []string { return provider.Classes() }

// Architectures (re-exported from package provider) for WithArch.
const (
	ArchAMD64 = provider.ArchAMD64
	ArchARM64 = provider.ArchARM64
)

// DefaultChannel is the channel leases boot from when none is given.
const DefaultChannel = "default"

// ImageSource records why a lease booted the image it did.
type ImageSource string

const (
	// ImageExplicit: the caller named the image (WithImage).
	ImageExplicit ImageSource = "explicit"
	// ImagePromoted: the image promoted in the lease's channel.
	ImagePromoted ImageSource = "promoted"
	// ImageBase: the provider's base image (nothing promoted yet).
	ImageBase ImageSource = "base"
)

type leaseOptions struct {
	class         string
	machineType   string
	arch          string
	desktop       bool
	browser       bool
	ttl           time.Duration
	idle          time.Duration
	image         string
	channel       string
	labels        map[string]string
	readyTimeout  time.Duration
	keepOnFailure bool
	packages      []string
}

// LeaseOption configures Warmup.
type LeaseOption func(*leaseOptions) error

// WithClass picks the lease class (default "standard").
func WithClass(class string) LeaseOption {
	return func(o *leaseOptions) error {
		if provider.ValidClass(class) {
			o.class = class
			return nil
		}
		return fmt.Errorf("%w: unknown class %q (want one of %s)", ErrInvalidArgument, class, strings.Join(provider.Classes(), ", "))
	}
}

// WithMachineType asks for one machine type; it disables class fallback.
func WithMachineType(t string) LeaseOption {
	return func(o *leaseOptions) error {
		if strings.TrimSpace(t) == "" {
			return fmt.Errorf("%w: empty machine type", ErrInvalidArgument)
		}
		o.machineType = t
		return nil
	}
}

// WithArch picks the architecture, "amd64" (default) or "arm64".
func WithArch(arch string) LeaseOption {
	return func(o *leaseOptions) error {
		if !provider.ValidArch(arch) {
			return fmt.Errorf("%w: arch %q (want amd64 or arm64)", ErrInvalidArgument, arch)
		}
		o.arch = arch
		return nil
	}
}

// WithDesktop asks for a virtual display (:99) with VNC on loopback.
func WithDesktop() LeaseOption { return func(o *leaseOptions) error { o.desktop = true; return nil } }

// WithBrowser asks for a browser (Chromium or Chrome) on the lease.
func WithBrowser() LeaseOption { return func(o *leaseOptions) error { o.browser = true; return nil } }

// WithTTL sets the hard lifetime (default 90 minutes, at most 7 days).
func WithTTL(d time.Duration) LeaseOption {
	return func(o *leaseOptions) error {
		if d < time.Minute || d > 7*24*time.Hour {
			return fmt.Errorf("%w: ttl %v out of range [1m, 168h]", ErrInvalidArgument, d)
		}
		o.ttl = d
		return nil
	}
}

// WithIdleTimeout sets how long the lease lives without Touch (default 30
// minutes).
func WithIdleTimeout(d time.Duration) LeaseOption {
	return func(o *leaseOptions) error {
		if d < time.Minute {
			return fmt.Errorf("%w: idle timeout %v below 1m", ErrInvalidArgument, d)
		}
		o.idle = d
		return nil
	}
}

// WithImage boots an explicit image, overriding the channel.
func WithImage(id string) LeaseOption {
	return func(o *leaseOptions) error {
		if strings.TrimSpace(id) == "" {
			return fmt.Errorf("%w: empty image id", ErrInvalidArgument)
		}
		o.image = id
		return nil
	}
}

// WithChannel picks the channel whose promoted image the lease boots when no
// explicit image is given (default "default").
func WithChannel(ch string) LeaseOption {
	return func(o *leaseOptions) error {
		if err := validChannel(ch); err != nil {
			return err
		}
		o.channel = ch
		return nil
	}
}

// WithLabels adds labels to the machine. Values are sanitized; a key that is
// empty, not [A-Za-z0-9_.-] (starting and ending alphanumeric, at most 63
// characters), starting with "crabbox" or "created-by" is refused with
// ErrInvalidArgument.
func WithLabels(labels map[string]string) LeaseOption {
	return func(o *leaseOptions) error {
		for k, v := range labels {
			if err := checkLabelKey(k); err != nil {
				return err
			}
			if o.labels == nil {
				o.labels = map[string]string{}
			}
			o.labels[k] = sanitizeLabelValue(v)
		}
		return nil
	}
}

// WithReadyTimeout bounds the wait for SSH and the readiness command (default
// 20 minutes, 45 with a desktop).
func WithReadyTimeout(d time.Duration) LeaseOption {
	return func(o *leaseOptions) error {
		if d <= 0 {
			return fmt.Errorf("%w: ready timeout %v", ErrInvalidArgument, d)
		}
		o.readyTimeout = d
		return nil
	}
}

// WithKeepOnFailure keeps a machine whose readiness failed, instead of
// releasing it; Warmup then returns the lease together with the error.
func WithKeepOnFailure() LeaseOption {
	return func(o *leaseOptions) error { o.keepOnFailure = true; return nil }
}

// WithPackages installs extra packages at boot.
func WithPackages(pkgs ...string) LeaseOption {
	return func(o *leaseOptions) error { o.packages = append(o.packages, pkgs...); return nil }
}

// checkLabelKey refuses a caller's label key that is empty, not
// [A-Za-z0-9_.-] starting and ending alphanumeric within 63 characters, or
// reserved (starting with "crabbox", or created-by): every backend accepts
// the rest, and the SDK's own labels stay its own.
func checkLabelKey(k string) error {
	switch {
	case k == "":
		return fmt.Errorf("%w: empty label key", ErrInvalidArgument)
	case strings.HasPrefix(strings.ToLower(k), "crabbox") || strings.EqualFold(k, LabelCreatedBy):
		return fmt.Errorf("%w: label %q is reserved", ErrInvalidArgument, k)
	case sanitizeLabelValue(k) != k:
		return fmt.Errorf("%w: label key %q must be [A-Za-z0-9_.-], starting and ending alphanumeric, at most 63 characters", ErrInvalidArgument, k)
	}
	return nil
}

func validChannel(ch string) error {
	if ch == "" || len(ch) > 40 || sanitizeLabelValue(ch) != ch || strings.ContainsAny(ch, "_.") {
		return fmt.Errorf("%w: channel %q must be letters, digits and dashes, at most 40 characters", ErrInvalidArgument, ch)
	}
	return nil
}
