package awsec2

import (
	"encoding/json"
	"sort"
	"strings"
)

// PolicyStatement is one statement of an IAM policy document.
type PolicyStatement struct {
	Sid       string                       `json:"Sid"`
	Effect    string                       `json:"Effect"`
	Action    []string                     `json:"Action"`
	Resource  []string                     `json:"Resource"`
	Condition map[string]map[string]string `json:"Condition,omitempty"`
}

// PolicyDocument is an IAM policy document.
type PolicyDocument struct {
	Version   string            `json:"Version"`
	Statement []PolicyStatement `json:"Statement"`
}

// Policy returns the least-privilege IAM policy the driver needs with its
// current options: read-only EC2 calls on "*", creation calls on "*" (EC2
// offers no useful resource scoping for them), every destructive or mutating
// call on existing resources only where they carry the crabbox=true tag, and
// SSM calls only on the channel parameters under the configured prefix.
// A test proves every operation the driver makes appears here.
func (d *Driver) Policy() PolicyDocument {
	prefix := d.o.ssmPrefix
	owned := map[string]map[string]string{"StringEquals": {"aws:ResourceTag/" + TagManaged: "true"}}
	doc := PolicyDocument{Version: "2012-10-17", Statement: []PolicyStatement{
		{
			Sid:    "CrabboxDescribe",
			Effect: "Allow",
			Action: []string{
				"ec2:DescribeImageReferences", "ec2:DescribeImages", "ec2:DescribeInstances",
				"ec2:DescribeLaunchTemplateVersions", "ec2:DescribeLaunchTemplates",
				"ec2:DescribeSecurityGroups", "ec2:DescribeSnapshots", "ec2:DescribeSubnets", "ec2:DescribeVpcs",
			},
			Resource: []string{"*"},
		},
		{
			Sid:    "CrabboxCreate",
			Effect: "Allow",
			Action: []string{
				"ec2:AuthorizeSecurityGroupIngress", "ec2:CopyImage", "ec2:CreateImage", "ec2:CreateSecurityGroup",
				"ec2:CreateTags", "ec2:ImportKeyPair", "ec2:RunInstances",
			},
			Resource: []string{"*"},
		},
		{
			Sid:    "CrabboxOwnedOnly",
			Effect: "Allow",
			Action: []string{
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
	}}
	if d.o.instanceProf != "" {
		doc.Statement = append(doc.Statement, PolicyStatement{
			Sid: "CrabboxPassInstanceRole", Effect: "Allow", Action: []string{"iam:PassRole"},
			Resource:  []string{"*"},
			Condition: map[string]map[string]string{"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
		})
	}
	return doc
}

// PolicyJSON returns Policy as indented JSON.
func (d *Driver) PolicyJSON() ([]byte, error) { return json.MarshalIndent(d.Policy(), "", "  ") }

// PolicyActions returns every action in Policy, sorted ("ec2:RunInstances").
func (d *Driver) PolicyActions() []string {
	var res []string
	for _, s := range d.Policy().Statement {
		res = append(res, s.Action...)
	}
	sort.Strings(res)
	return res
}
