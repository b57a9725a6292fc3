// Command aws runs the Crabbox image bake runbook (package
// examples/runbook/steps) on Amazon EC2 (-provider aws, the default
// credential chain; costs money) or on EC2 emulated by moto with real sshd
// boxes on loopback (-provider moto). It is its own program so that the
// local demo (examples/runbook) does not link the AWS SDK.
//
//	go run ./examples/runbook/aws -provider aws -aws-region eu-central-1 -aws-ssh-cidr 203.0.113.0/24
//	go run ./examples/runbook/aws -provider moto
package main

import (
	"context"
	"errors"
	"flag"

	"github.com/aws/aws-sdk-go-v2/config"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/crabboxtest/awstest"
	"github.com/crabbox/crabbox-go/examples/runbook/steps"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

var (
	flagAWSRegion  = flag.String("aws-region", "", "aws: region (default: from the AWS config)")
	flagAWSProfile = flag.String("aws-profile", "", "aws: shared config profile")
	flagAWSSubnet  = flag.String("aws-subnet", "", "aws: subnet for leases (default: the default VPC)")
	flagAWSSG      = flag.String("aws-security-group", "", "aws: existing security group (default: crabbox-ssh, managed)")
	flagAWSCIDR    = flag.String("aws-ssh-cidr", "", "aws: source CIDR allowed to SSH (required without -aws-security-group)")
	flagAWSPrefix  = flag.String("aws-ssm-prefix", awsec2.DefaultSSMPrefix, "aws: SSM parameter prefix of channels")
	flagAWSSpot    = flag.Bool("aws-spot", false, "aws: spot instances, falling back to on-demand")
	flagMotoEP     = flag.String("moto-endpoint", "", "moto: use this running crabbox moto launcher instead of starting one")
)

// backends are the ones this program links; init adds them.
var backends []steps.Backend

func main() { steps.Main("aws", backends) }

func init() {
	backends = append(backends, steps.Backend{
		Name: "aws",
		Help: "Amazon EC2 with the default credential chain (costs money; see -aws-* flags)",
		Setup: func(ctx context.Context) (provider.Driver, []crabbox.Option, steps.Params, func(), error) {
			var lo []func(*config.LoadOptions) error
			if *flagAWSRegion != "" {
				lo = append(lo, config.WithRegion(*flagAWSRegion))
			}
			if *flagAWSProfile != "" {
				lo = append(lo, config.WithSharedConfigProfile(*flagAWSProfile))
			}
			cfg, err := config.LoadDefaultConfig(ctx, lo...)
			if err != nil {
				return nil, nil, steps.Params{}, nil, err
			}
			opts := []awsec2.Option{awsec2.WithSSMPrefix(*flagAWSPrefix), awsec2.WithSpot(*flagAWSSpot, true)}
			if *flagAWSSubnet != "" {
				opts = append(opts, awsec2.WithSubnet(*flagAWSSubnet))
			}
			if *flagAWSSG != "" {
				opts = append(opts, awsec2.WithSecurityGroup(*flagAWSSG))
			}
			if *flagAWSCIDR != "" {
				opts = append(opts, awsec2.WithSSHCIDR(*flagAWSCIDR))
			}
			if *flagAWSSG == "" && *flagAWSCIDR == "" {
				return nil, nil, steps.Params{}, nil, errors.New("aws: give -aws-ssh-cidr (your address range) or -aws-security-group")
			}
			d, err := awsec2.New(cfg, opts...)
			if err != nil {
				return nil, nil, steps.Params{}, nil, err
			}
			p := steps.Params{Class: crabbox.ClassStandard, Desktop: true, Browser: true, Owner: "openclaw", Product: "crabbox"}
			return d, nil, p, func() {}, nil
		},
	})
	backends = append(backends, steps.Backend{
		Name: "moto",
		Help: "EC2 emulated by moto with real sshd boxes on loopback (crabboxtest/awstest; needs root, python3 with moto[server], sshd)",
		Setup: func(ctx context.Context) (provider.Driver, []crabbox.Option, steps.Params, func(), error) {
			cloud, err := awstest.Start(ctx, awstest.Options{Endpoint: *flagMotoEP})
			if err != nil {
				return nil, nil, steps.Params{}, nil, err
			}
			d, err := cloud.Driver()
			if err != nil {
				cloud.Close()
				return nil, nil, steps.Params{}, nil, err
			}
			p := steps.Params{
				// Boxes run on this host: the tools it has, plus one the
				// bake installs into the image.
				Tools: []string{"sh", "git", "curl", "tar", "crabbox-hello"},
				Bake: `R="${CRABBOX_FS_ROOT:-}"
mkdir -p "$R/usr/local/bin" "$R/var/cache/crabbox/pnpm"
printf '#!/bin/sh\necho crabbox-hello from the baked AMI\n' > "$R/usr/local/bin/crabbox-hello"
chmod 755 "$R/usr/local/bin/crabbox-hello"
crabbox-hello`,
				Class:   crabbox.ClassStandard,
				Owner:   "openclaw",
				Product: "crabbox",
			}
			return d, cloud.ClientOptions(), p, func() { _ = cloud.Close() }, nil
		},
	})
}
