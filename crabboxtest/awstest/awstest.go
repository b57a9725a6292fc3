// Package awstest runs Amazon EC2 on this machine, for tests of bake
// programs that use provider/awsec2: a moto server (extended by crabbox's
// launcher with the EC2 behaviour moto lacks: image states, snapshot
// in-use windows, ...) answers the AWS SDK on 127.0.0.1, and each instance
// it runs is a real OpenSSH sshd on loopback, booted from the instance's
// user-data (user, keys, files), which Cloud.Dial reaches in place of the
// public-looking address moto hands out. An image made of an instance
// copies that box's file system, so what a bake installed is there on the
// candidate; commands run on this host as the box's user, below
// CRABBOX_FS_ROOT.
//
// It needs root (each box logs in as a Unix user it creates), OpenSSH's
// sshd at /usr/sbin/sshd, useradd/usermod/userdel, and python3 with
// moto[server]; Start returns an error wrapping ErrMissing that names what
// is missing. Nothing here dials beyond 127.0.0.0/8.
//
//	cloud, err := awstest.Start(ctx, awstest.Options{})
//	defer cloud.Close()
//	drv, err := cloud.Driver()
//	c, err := crabbox.New(drv, cloud.ClientOptions()...)
package awstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/awsbox"
	"github.com/crabbox/crabbox-go/internal/testenv/moto"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

// ErrMissing is wrapped by Start's error when a component it needs is not
// installed or the process is not root.
var ErrMissing = errors.New("awstest: missing component")

// Options configure Start.
type Options struct {
	// Endpoint is a running crabbox moto launcher to use instead of
	// starting one (Close leaves it running).
	Endpoint string
}

// Cloud is a running emulated EC2. Its methods are safe for concurrent use.
type Cloud struct {
	// Endpoint is moto's base URL, http://127.0.0.1:PORT.
	Endpoint string
	// Config is an aws.Config for it: region us-east-1, static
	// credentials, one attempt per request.
	Config aws.Config

	srv *moto.Server
	emu *awsbox.Emulator
}

// Start starts moto (unless o.Endpoint names one) and the box emulator.
// Close the Cloud when done.
func Start(ctx context.Context, o Options) (*Cloud, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := sshd.Available(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMissing, err)
	}
	c := &Cloud{Endpoint: o.Endpoint}
	if c.Endpoint == "" {
		srv, err := moto.Launch()
		if errors.Is(err, moto.ErrMissing) {
			return nil, fmt.Errorf("%w: %v", ErrMissing, err)
		}
		if err != nil {
			return nil, err
		}
		c.srv, c.Endpoint = srv, srv.Endpoint
	}
	c.Config = aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("moto", "moto", ""),
		HTTPClient:  &http.Client{Timeout: time.Minute},
		Retryer:     func() aws.Retryer { return retry.AddWithMaxAttempts(retry.NewStandard(), 1) },
	}
	emu, err := awsbox.Start(c.EC2())
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("awstest: box emulator: %w", err)
	}
	c.emu = emu
	return c, nil
}

// EC2 returns an EC2 client for the emulated cloud, for a test's own
// inspection of its state.
func (c *Cloud) EC2() *ec2.Client {
	return ec2.NewFromConfig(c.Config, func(o *ec2.Options) { o.BaseEndpoint = aws.String(c.Endpoint) })
}

// Driver returns an awsec2 driver for the emulated cloud (its endpoint,
// SSH open to 127.0.0.0/8, short cleanup backoffs), with opts after those.
func (c *Cloud) Driver(opts ...awsec2.Option) (*awsec2.Driver, error) {
	base := []awsec2.Option{awsec2.WithEndpoint(c.Endpoint), awsec2.WithSSHCIDR("127.0.0.0/8"),
		awsec2.WithCleanupBackoff(10*time.Millisecond, 100*time.Millisecond, 10)}
	return awsec2.New(c.Config, append(base, opts...)...)
}

// Dial reaches an instance's box by the address moto handed out (use it
// as crabbox.WithDialer). An address that is not a running emulated
// instance is refused without touching the network.
func (c *Cloud) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return c.emu.Dial(ctx, network, addr)
}

// ClientOptions are the crabbox.Options a client of the emulated cloud
// needs: the dialer, and polls suited to a cloud that answers in
// milliseconds.
func (c *Cloud) ClientOptions() []crabbox.Option {
	return []crabbox.Option{
		crabbox.WithDialer(c.Dial),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(50 * time.Millisecond)),
		crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(50 * time.Millisecond)),
	}
}

// Close stops every box (removing their users and file systems) and the
// moto server Start started.
func (c *Cloud) Close() error {
	if c.emu != nil {
		c.emu.Close()
	}
	if c.srv != nil {
		c.srv.Close()
	}
	return nil
}
