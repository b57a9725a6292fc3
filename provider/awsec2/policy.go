// The IAM policy the driver needs (Policy, PolicyJSON, PolicyActions).

package awsec2

import (
	"encoding/json"
	"sort"
	"strings"
)

// PolicyStatement is one statement of an IAM policy document. Condition
// maps an operator ("StringEquals") to keys and their allowed values (any
// of them matches).
type PolicyStatement struct {
	Sid       string                         `json:"Sid"`
	Effect    string                         `json:"Effect"`
	Action    []string                       `json:"Action"`
	Resource  []string                       `json:"Resource"`
	Condition map[string]map[string][]string `json:"Condition,omitempty"`
}

// PolicyDocument is an IAM policy document.
type PolicyDocument struct {
	Version   string            `json:"Version"`
	Statement []PolicyStatement `json:"Statement"`
}

// TagOnCreateActions are the EC2 calls the driver tags resources in at
// creation (TagSpecifications); the policy lets ec2:CreateTags run only as
// part of them (condition ec2:CreateAction) or on resources already tagged
// crabbox=true.
var TagOnCreateActions = []string{"CopyImage", "CreateImage", "CreateSecurityGroup", "ImportKeyPair", "RunInstances"}

// ImageReferenceActions are the actions DescribeImageReferences needs for
// each resource type it checks ("Identify your resources referencing
// specified AMIs", Required IAM permissions,
// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-ami-references.html).
// ImageUsage checks all of them, and Policy grants every one.
var ImageReferenceActions = map[string][]string{
	"ec2:Instance":                 {"ec2:DescribeInstances"},
	"ec2:LaunchTemplate":           {"ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions"},
	"ssm:Parameter":                {"ssm:DescribeParameters"},
	"imagebuilder:ImageRecipe":     {"imagebuilder:ListImageRecipes"},
	"imagebuilder:ContainerRecipe": {"imagebuilder:ListContainerRecipes"},
}

// Policy returns the IAM policy the driver needs with its current options.
//
// What it scopes:
//   - ec2:CreateTags runs only as part of a creating call the driver makes
//     (condition ec2:CreateAction in TagOnCreateActions, so only on the
//     resource being created) or on resources already tagged crabbox=true:
//     the role cannot mark an arbitrary existing resource crabbox-owned and
//     then delete it.
//   - Every destructive or mutating call on existing resources
//     (TerminateInstances, DeregisterImage, DeleteSnapshot, DeleteKeyPair,
//     DeleteTags, CreateTags, protection and deprecation,
//     AuthorizeSecurityGroupIngress) needs the crabbox=true tag on the
//     resource.
//   - SSM calls reach only the channel parameters under the configured
//     prefix.
//   - iam:PassRole is granted only with an instance profile, only towards
//     EC2, and only on the profile's role when WithInstanceProfileRole names
//     it.
//   - CreateImage only of instances tagged crabbox=true (its new image and
//     snapshots on any AMI and snapshot ARN): the role cannot image, and so
//     reboot or read the disk of, an instance crabbox did not launch.
//
// What is still broad, and why:
//   - ec2:Describe* on "*": EC2 describe calls support no resource-level
//     permissions.
//   - RunInstances, CopyImage, CreateSecurityGroup and
//     ImportKeyPair on "*": they touch resources the request does not tag
//     (images, subnets, security groups, network interfaces), so a
//     request-tag condition would need one statement per resource type. The
//     role can therefore launch any instance type from any image in any
//     subnet; bound that with quotas or an SCP.
//   - The SSM parameter ARN leaves region and account as wildcards.
//   - imagebuilder:ListImageRecipes and imagebuilder:ListContainerRecipes
//     on "*": DescribeImageReferences checks the Image Builder recipes
//     with the caller's permissions (list calls, read-only).
//   - ssm:DescribeParameters and ssm:GetParameters on "*": cleanup lists
//     the channels and, where DescribeImageReferences is refused, reads
//     the parameters of data type aws:ec2:image to find those naming an
//     image (DescribeParameters supports no resource-level permissions; a
//     parameter anywhere may reference an image). The driver never asks
//     for values of other data types, but the grant lets the role read any
//     parameter's value, SecureStrings too where their KMS key allows the
//     role (the AWS-managed aws/ssm key does): keep secrets under a
//     customer-managed key, or deny ssm:GetParameters on their paths with
//     an explicit Deny next to this policy (cleanup then keeps images whose
//     use it cannot read, as "use unknown").
//   - Without WithInstanceProfileRole, iam:PassRole is on the account's
//     roles (instance profile given as an ARN) or on "*" (given as a name),
//     limited only by iam:PassedToService ec2.amazonaws.com.
//
// A test proves every operation the driver makes is granted by the policy
// of that driver, and that every call it tags at creation is in
// TagOnCreateActions.
func (d *Driver) Policy() PolicyDocument {
	prefix := d.o.ssmPrefix
	owned := map[string]map[string][]string{"StringEquals": {"aws:ResourceTag/" + TagManaged: {"true"}}}
	doc := PolicyDocument{Version: "2012-10-17", Statement: []PolicyStatement{
		{
			Sid:    "CrabboxDescribe",
			Effect: "Allow",
			Action: []string{
				"ec2:DescribeImageReferences", "ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeKeyPairs",
				"ec2:DescribeLaunchTemplateVersions", "ec2:DescribeLaunchTemplates",
				"ec2:DescribeSecurityGroups", "ec2:DescribeSnapshots", "ec2:DescribeSubnets", "ec2:DescribeVpcs",
			},
			Resource: []string{"*"},
		},
		{
			Sid:    "CrabboxCreate",
			Effect: "Allow",
			Action: []string{
				"ec2:CopyImage", "ec2:CreateSecurityGroup", "ec2:ImportKeyPair", "ec2:RunInstances",
			},
			Resource: []string{"*"},
		},
		{
			// CreateImage reads the instance it images: only crabbox's own
			// (otherwise the role could image, and reboot, any instance of
			// the account and read its disk from a lease of the image).
			Sid:       "CrabboxImageOwnedInstances",
			Effect:    "Allow",
			Action:    []string{"ec2:CreateImage"},
			Resource:  []string{"arn:aws:ec2:*:*:instance/*"},
			Condition: owned,
		},
		{
			// The image and snapshots CreateImage makes (tagged at creation,
			// CrabboxTagOnCreate).
			Sid:      "CrabboxImageNew",
			Effect:   "Allow",
			Action:   []string{"ec2:CreateImage"},
			Resource: []string{"arn:aws:ec2:*::image/*", "arn:aws:ec2:*::snapshot/*"},
		},
		{
			Sid:       "CrabboxTagOnCreate",
			Effect:    "Allow",
			Action:    []string{"ec2:CreateTags"},
			Resource:  []string{"*"},
			Condition: map[string]map[string][]string{"StringEquals": {"ec2:CreateAction": append([]string(nil), TagOnCreateActions...)}},
		},
		{
			Sid:    "CrabboxOwnedOnly",
			Effect: "Allow",
			Action: []string{
				"ec2:AuthorizeSecurityGroupIngress", "ec2:CreateTags",
				"ec2:DeleteKeyPair", "ec2:DeleteSnapshot", "ec2:DeleteTags", "ec2:DeregisterImage",
				"ec2:DisableImageDeregistrationProtection", "ec2:EnableImageDeprecation",
				"ec2:EnableImageDeregistrationProtection", "ec2:TerminateInstances",
			},
			Resource:  []string{"*"},
			Condition: owned,
		},
		{
			Sid:    "CrabboxChannels",
			Effect: "Allow",
			Action: []string{
				"ssm:DeleteParameter", "ssm:GetParameter", "ssm:GetParameterHistory", "ssm:LabelParameterVersion",
				"ssm:PutParameter",
			},
			Resource: []string{"arn:aws:ssm:*:*:parameter" + strings.TrimSuffix(prefix, "/") + "/*"},
		},
		{
			// DescribeImageReferences checks each resource type with the
			// caller's permissions; ImageUsage asks about all of them
			// (IncludeAllResourceTypes). The EC2 and SSM ones are granted
			// above and below; the Image Builder recipes need these (see
			// ImageReferenceActions).
			Sid:      "CrabboxImageReferences",
			Effect:   "Allow",
			Action:   []string{"imagebuilder:ListContainerRecipes", "imagebuilder:ListImageRecipes"},
			Resource: []string{"*"},
		},
		{
			// Cleanup lists the channels and, when DescribeImageReferences
			// is refused, finds the aws:ec2:image parameters naming an
			// image: DescribeParameters has no resource-level permissions,
			// and any parameter may reference an image.
			Sid:      "CrabboxImageParameters",
			Effect:   "Allow",
			Action:   []string{"ssm:DescribeParameters", "ssm:GetParameters"},
			Resource: []string{"*"},
		},
	}}
	if d.o.instanceProf != "" {
		doc.Statement = append(doc.Statement, PolicyStatement{
			Sid: "CrabboxPassInstanceRole", Effect: "Allow", Action: []string{"iam:PassRole"},
			Resource:  []string{d.passRoleResource()},
			Condition: map[string]map[string][]string{"StringEquals": {"iam:PassedToService": {"ec2.amazonaws.com"}}},
		})
	}
	return doc
}

// passRoleResource is the role iam:PassRole is granted on: the configured
// role, else every role of the instance profile's account (when the profile
// is an ARN), else "*".
func (d *Driver) passRoleResource() string {
	if d.o.instanceRole != "" {
		return d.o.instanceRole
	}
	// arn:PARTITION:iam::ACCOUNT:instance-profile/NAME
	if parts := strings.SplitN(d.o.instanceProf, ":", 6); len(parts) == 6 && parts[0] == "arn" && parts[2] == "iam" && parts[4] != "" {
		return "arn:" + parts[1] + ":iam::" + parts[4] + ":role/*"
	}
	return "*"
}

// PolicyJSON returns Policy as indented JSON.
func (d *Driver) PolicyJSON() ([]byte, error) { return json.MarshalIndent(d.Policy(), "", "  ") }

// PolicyActions returns every action in Policy once, sorted
// ("ec2:RunInstances").
func (d *Driver) PolicyActions() []string {
	seen := map[string]bool{}
	var res []string
	for _, s := range d.Policy().Statement {
		for _, a := range s.Action {
			if !seen[a] {
				seen[a] = true
				res = append(res, a)
			}
		}
	}
	sort.Strings(res)
	return res
}
