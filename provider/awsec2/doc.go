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
// snapshots. Everything else is retried, with the client's backoff, by the
// root package. Configure the SDK's own retryer on the aws.Config you pass.
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
//	images.go    AMIs and their snapshots: BaseImage, CreateImage, DeleteImage, deprecation, protection, copies, usage
//	channels.go  promotion channels as SSM parameters, known-good version labels
//	orphans.go   SweepOrphans: key pairs left without an instance
//	labels.go    tag keys the driver writes, labels to and from EC2 tags and tag filters
//	policy.go    the IAM policy the driver needs (Policy, PolicyJSON, PolicyActions)
package awsec2
