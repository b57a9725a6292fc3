// Package awsec2 is the crabbox driver for Amazon EC2: leases are EC2
// instances, images are AMIs with their EBS snapshots, and promotion channels
// are SSM parameters of data type aws:ec2:image.
//
// Construct it with New from an aws.Config the caller loaded (default
// credential chain) or with NewFromClients from anything satisfying the
// narrow EC2API and SSMAPI interfaces. Hand it to crabbox.New; users never
// call the driver directly.
//
// The driver maps each AWS error code once to a portable provider code (see
// package provider) and retries only what AWS semantics require inside one
// operation: InvalidSnapshot.InUse and throttling while deleting an image's
// snapshots. Each API request is retried by the SDK's own retryer, which
// you configure on the aws.Config you pass (default: the standard retryer,
// 3 attempts with backoff and jitter); the driver then reports
// RetriesRequests and the crabbox client does not retry its calls on top,
// so attempts never multiply. With the SDK's retries off (aws.NopRetryer),
// the crabbox client retries whole calls instead.
//
// Every create is adoptable after a cancellation: when RunInstances,
// ImportKeyPair or CreateImage fails ambiguously, the driver looks for what
// the call made (by client token, key name, image token) for WithAdoptWait
// (default 10 s) before it deletes the key pair the instance needs or
// reports that nothing was made.
//
// # Files
//
// Every crabbox driver has the same files, and a subject lives in the file
// of its name (a driver lacking a subject lacks the file):
//
//	doc.go       this overview (package documentation only)
//	driver.go    Driver, the EC2API and SSMAPI client interfaces, New, NewFromClients and their options, Info
//	errors.go    AWS error codes and HTTP statuses mapped to portable provider codes
//	machines.go  leases as EC2 instances: MachineTypes, CreateMachine, GetMachine, ListMachines, DeleteMachine, key pairs, the security group
//	images.go    AMIs and their snapshots: BaseImage, CreateImage, DeleteImage, deprecation, protection, copies
//	usage.go     what uses an image: ImageUsage and ImagesUsage (DescribeImageReferences, or a scan where refused)
//	channels.go  promotion channels as SSM parameters, known-good version labels
//	orphans.go   SweepOrphans: key pairs left without an instance, snapshots left without an image
//	labels.go    tag keys the driver writes, labels to and from EC2 tags and tag filters
//	policy.go    the IAM policy the driver needs (Policy, PolicyJSON, PolicyActions)
package awsec2
