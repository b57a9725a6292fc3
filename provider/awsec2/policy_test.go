// Tests of policy.go: the IAM policy document.

package awsec2_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/awsec2"
)

func TestPolicyDocument(t *testing.T) {
	d, err := awsec2.NewFromClients(failingEC2{}, fakeSSM{}, awsec2.WithSSMPrefix("/team/images/"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.PolicyJSON()
	if err != nil {
		t.Fatal(err)
	}
	var doc awsec2.PolicyDocument
	if err := json.Unmarshal(b, &doc); err != nil || doc.Version != "2012-10-17" {
		t.Fatalf("policy JSON %s: %v", b, err)
	}
	ownedOnly := func(s awsec2.PolicyStatement) bool {
		return slices.Equal(s.Condition["StringEquals"]["aws:ResourceTag/"+awsec2.TagManaged], []string{"true"})
	}
	createTags := 0
	for _, s := range doc.Statement {
		for _, a := range s.Action {
			switch {
			case a == "ssm:DescribeParameters", a == "ssm:GetParameters":
				// Read-only, for cleanup's channel listing and image
				// parameter scan: any parameter may name an image.
				if s.Sid != "CrabboxImageParameters" || len(s.Action) != 2 || s.Condition != nil {
					t.Errorf("%s outside the read-only image parameter statement: %+v", a, s)
				}
			case strings.HasPrefix(a, "ssm:"):
				if len(s.Resource) != 1 || s.Resource[0] != "arn:aws:ssm:*:*:parameter/team/images/*" {
					t.Errorf("%s on %v: want only the channel parameters", a, s.Resource)
				}
			case a == "ec2:DeregisterImage", a == "ec2:DeleteSnapshot", a == "ec2:TerminateInstances", a == "ec2:DeleteKeyPair",
				a == "ec2:DeleteTags", a == "ec2:AuthorizeSecurityGroupIngress":
				if !ownedOnly(s) {
					t.Errorf("%s not limited to crabbox-owned resources: %+v", a, s)
				}
			case a == "ec2:CreateTags":
				// Only as part of the driver's creating calls, or on what
				// is already crabbox-owned: never on arbitrary resources.
				createTags++
				onCreate := s.Condition["StringEquals"]["ec2:CreateAction"]
				if !ownedOnly(s) && !slices.Equal(onCreate, awsec2.TagOnCreateActions) {
					t.Errorf("ec2:CreateTags granted without a creation or ownership condition: %+v", s)
				}
				if len(s.Condition) != 1 || len(s.Condition["StringEquals"]) != 1 {
					t.Errorf("ec2:CreateTags statement mixes conditions: %+v", s)
				}
			}
		}
	}
	if createTags != 2 {
		t.Errorf("ec2:CreateTags in %d statements, want 2 (at creation, on owned resources)", createTags)
	}
	if strings.Contains(string(b), "iam:PassRole") {
		t.Error("iam:PassRole granted without an instance profile")
	}
	if n := len(d.PolicyActions()); n != len(slices.Compact(d.PolicyActions())) {
		t.Errorf("PolicyActions has duplicates: %v", d.PolicyActions())
	}

	passRole := func(opts ...awsec2.Option) []string {
		t.Helper()
		d, err := awsec2.NewFromClients(failingEC2{}, fakeSSM{}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range d.Policy().Statement {
			if slices.Contains(s.Action, "iam:PassRole") {
				if !slices.Equal(s.Condition["StringEquals"]["iam:PassedToService"], []string{"ec2.amazonaws.com"}) {
					t.Errorf("iam:PassRole not limited to EC2: %+v", s)
				}
				return s.Resource
			}
		}
		return nil
	}
	const role = "arn:aws:iam::123456789012:role/crabbox-box"
	if r := passRole(awsec2.WithInstanceProfile("crabbox-box"), awsec2.WithInstanceProfileRole(role)); !slices.Equal(r, []string{role}) {
		t.Errorf("iam:PassRole on %v, want only the profile's role %s", r, role)
	}
	if r := passRole(awsec2.WithInstanceProfile("arn:aws:iam::123456789012:instance-profile/crabbox-box")); !slices.Equal(r, []string{"arn:aws:iam::123456789012:role/*"}) {
		t.Errorf("iam:PassRole with a profile ARN on %v, want the account's roles", r)
	}
	if r := passRole(awsec2.WithInstanceProfile("crabbox-box")); !slices.Equal(r, []string{"*"}) {
		t.Errorf("iam:PassRole with a profile name on %v", r)
	}
	if _, err := awsec2.NewFromClients(failingEC2{}, fakeSSM{}, awsec2.WithInstanceProfileRole("crabbox-box")); !errors.Is(err, provider.ErrInvalidArgument) {
		t.Errorf("WithInstanceProfileRole(not an ARN) = %v", err)
	}
}

// The end-of-run policy check catches an operation the policy does not
// grant and a call tagging at creation outside the CreateTags condition.
func TestPolicyCheckCatchesGaps(t *testing.T) {
	d, err := awsec2.NewFromClients(failingEC2{}, fakeSSM{})
	if err != nil {
		t.Fatal(err)
	}
	missing, untaggable := policyGaps(d,
		map[string]bool{"ec2:RunInstances": true, "ec2:ModifyInstanceAttribute": true, "iam:PassRole": true},
		map[string]bool{"RunInstances": true, "CreateSnapshot": true})
	if !slices.Equal(missing, []string{"ec2:ModifyInstanceAttribute", "iam:PassRole"}) || !slices.Equal(untaggable, []string{"CreateSnapshot"}) {
		t.Errorf("policyGaps = %v, %v", missing, untaggable)
	}
	withProfile, err := awsec2.NewFromClients(failingEC2{}, fakeSSM{}, awsec2.WithInstanceProfile("p"))
	if err != nil {
		t.Fatal(err)
	}
	if missing, _ := policyGaps(withProfile, map[string]bool{"iam:PassRole": true}, nil); len(missing) != 0 {
		t.Errorf("a driver with an instance profile: %v missing", missing)
	}
}

// DescribeImageReferences needs, for each resource type ImageUsage asks
// about (all of them), its own actions: the policy grants each on "*"
// without a condition, as those list and describe calls have no
// resource-level permissions.
func TestPolicyCoversImageReferences(t *testing.T) {
	d, err := awsec2.NewFromClients(failingEC2{}, fakeSSM{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ec2:DescribeImageReferences"}
	for _, kind := range []string{"ec2:Instance", "ec2:LaunchTemplate", "ssm:Parameter", "imagebuilder:ImageRecipe", "imagebuilder:ContainerRecipe"} {
		acts := awsec2.ImageReferenceActions[kind]
		if len(acts) == 0 {
			t.Errorf("no actions listed for %s", kind)
		}
		want = append(want, acts...)
	}
	for _, a := range want {
		granted := false
		for _, s := range d.Policy().Statement {
			if slices.Contains(s.Action, a) && slices.Equal(s.Resource, []string{"*"}) && s.Condition == nil && s.Effect == "Allow" {
				granted = true
			}
		}
		if !granted {
			t.Errorf("%s, which DescribeImageReferences needs, is not granted on * unconditionally", a)
		}
	}
}

// The SSM prefix needs a segment: "/" would make every top-level parameter
// a channel and give the policy write and delete on all of them.
func TestSSMPrefixRootIsRefused(t *testing.T) {
	for _, p := range []string{"/", "//", "", "crabbox/", "/crabbox"} {
		if _, err := awsec2.NewFromClients(failingEC2{}, fakeSSM{}, awsec2.WithSSMPrefix(p)); !errors.Is(err, provider.ErrInvalidArgument) {
			t.Errorf("WithSSMPrefix(%q): %v, want ErrInvalidArgument", p, err)
		}
	}
	if _, err := awsec2.NewFromClients(failingEC2{}, fakeSSM{}, awsec2.WithSSMPrefix("/a/")); err != nil {
		t.Errorf("WithSSMPrefix(\"/a/\"): %v", err)
	}
}
