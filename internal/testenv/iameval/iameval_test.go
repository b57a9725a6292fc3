// Tests of iameval: the evaluation order, wildcards and condition operators, including what a condition-blind engine gets wrong.

package iameval_test

import (
	"testing"

	"github.com/crabbox/crabbox-go/internal/testenv/iameval"
)

const doc = `{
  "Version": "2012-10-17",
  "Statement": [
    {"Sid": "Describe", "Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"},
    {"Sid": "Owned", "Effect": "Allow", "Action": ["ec2:DeleteKeyPair", "ec2:CreateTags", "ec2:TerminateInstances"], "Resource": "*",
     "Condition": {"StringEquals": {"aws:ResourceTag/crabbox": "true"}}},
    {"Sid": "TagOnCreate", "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*",
     "Condition": {"StringEquals": {"ec2:CreateAction": ["RunInstances", "ImportKeyPair"]}}},
    {"Sid": "RequestTags", "Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "arn:aws:ec2:*:*:instance/*",
     "Condition": {"StringEquals": {"aws:RequestTag/crabbox": "true"}, "ForAllValues:StringEquals": {"aws:TagKeys": ["crabbox", "Name"]}}},
    {"Sid": "AnyKey", "Effect": "Allow", "Action": "ec2:DeleteTags", "Resource": "*",
     "Condition": {"ForAnyValue:StringEquals": {"aws:TagKeys": ["crabbox-deleted"]}}},
    {"Sid": "Params", "Effect": "Allow", "Action": "ssm:*Parameter*", "Resource": "arn:aws:ssm:*:*:parameter/crabbox/images/*"},
    {"Sid": "Like", "Effect": "Allow", "Action": "ec2:DeleteSnapshot", "Resource": "*",
     "Condition": {"StringLike": {"aws:ResourceTag/Name": "crabbox-?-*"}}},
    {"Sid": "IfExists", "Effect": "Allow", "Action": "ec2:DeregisterImage", "Resource": "*",
     "Condition": {"StringEqualsIfExists": {"aws:ResourceTag/crabbox": "true"}}},
    {"Sid": "PassRole", "Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::123456789012:role/*",
     "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
    {"Sid": "NoProd", "Effect": "Deny", "Action": "ssm:DeleteParameter", "Resource": "arn:aws:ssm:*:*:parameter/crabbox/images/prod"}
  ]
}`

func TestEvaluate(t *testing.T) {
	p, err := iameval.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	key := "arn:aws:ec2:us-east-1:123456789012:key-pair/crabbox-x"
	inst := "arn:aws:ec2:us-east-1:123456789012:instance/*"
	owned := map[string][]string{"aws:ResourceTag/crabbox": {"true"}}
	cases := []struct {
		name string
		req  iameval.Request
		want iameval.Decision
		sid  string
		// blind is what an engine that ignores conditions (and checks
		// every request against "*") decides, where it differs.
		blind bool
	}{
		{name: "wildcard action", req: iameval.Request{Action: "ec2:DescribeKeyPairs", Resource: "*"}, want: iameval.Allow, sid: "Describe"},
		{name: "action case-insensitive", req: iameval.Request{Action: "EC2:describeimages", Resource: "*"}, want: iameval.Allow},
		{name: "unlisted action is implicitly denied", req: iameval.Request{Action: "ec2:DeleteVolume", Resource: "*"}, want: iameval.ImplicitDeny},
		{name: "owned key", req: iameval.Request{Action: "ec2:DeleteKeyPair", Resource: key, Context: owned}, want: iameval.Allow, sid: "Owned"},
		{name: "foreign key", req: iameval.Request{Action: "ec2:DeleteKeyPair", Resource: key,
			Context: map[string][]string{"aws:ResourceTag/crabbox": {"false"}}}, want: iameval.ImplicitDeny, blind: true},
		{name: "gone key: no tags at all", req: iameval.Request{Action: "ec2:DeleteKeyPair", Resource: key}, want: iameval.ImplicitDeny, blind: true},
		{name: "tag key name case-insensitive", req: iameval.Request{Action: "ec2:DeleteKeyPair", Resource: key,
			Context: map[string][]string{"AWS:resourcetag/crabbox": {"true"}}}, want: iameval.Allow},
		{name: "tag value case-sensitive", req: iameval.Request{Action: "ec2:DeleteKeyPair", Resource: key,
			Context: map[string][]string{"aws:ResourceTag/crabbox": {"TRUE"}}}, want: iameval.ImplicitDeny, blind: true},
		{name: "tag on create", req: iameval.Request{Action: "ec2:CreateTags", Resource: inst,
			Context: map[string][]string{"ec2:CreateAction": {"RunInstances"}}}, want: iameval.Allow, sid: "TagOnCreate"},
		{name: "create tags outside a create", req: iameval.Request{Action: "ec2:CreateTags", Resource: key}, want: iameval.ImplicitDeny, blind: true},
		{name: "create tags in another create", req: iameval.Request{Action: "ec2:CreateTags", Resource: key,
			Context: map[string][]string{"ec2:CreateAction": {"CreateVolume"}}}, want: iameval.ImplicitDeny, blind: true},
		{name: "request tags and allowed keys", req: iameval.Request{Action: "ec2:RunInstances", Resource: inst,
			Context: map[string][]string{"aws:RequestTag/crabbox": {"true"}, "aws:TagKeys": {"crabbox", "Name"}}}, want: iameval.Allow, sid: "RequestTags"},
		{name: "a tag key outside ForAllValues", req: iameval.Request{Action: "ec2:RunInstances", Resource: inst,
			Context: map[string][]string{"aws:RequestTag/crabbox": {"true"}, "aws:TagKeys": {"crabbox", "owner"}}}, want: iameval.ImplicitDeny, blind: true},
		{name: "no request tag", req: iameval.Request{Action: "ec2:RunInstances", Resource: inst}, want: iameval.ImplicitDeny, blind: true},
		{name: "resource ARN outside the pattern", req: iameval.Request{Action: "ec2:RunInstances", Resource: "arn:aws:ec2:us-east-1:123456789012:volume/*",
			Context: map[string][]string{"aws:RequestTag/crabbox": {"true"}}}, want: iameval.ImplicitDeny, blind: true},
		{name: "ForAnyValue hit", req: iameval.Request{Action: "ec2:DeleteTags", Resource: key,
			Context: map[string][]string{"aws:TagKeys": {"x", "crabbox-deleted"}}}, want: iameval.Allow},
		{name: "ForAnyValue on a missing key", req: iameval.Request{Action: "ec2:DeleteTags", Resource: key}, want: iameval.ImplicitDeny, blind: true},
		{name: "StringLike", req: iameval.Request{Action: "ec2:DeleteSnapshot", Resource: "*",
			Context: map[string][]string{"aws:ResourceTag/Name": {"crabbox-a-snap"}}}, want: iameval.Allow, sid: "Like"},
		{name: "StringLike ? is one character", req: iameval.Request{Action: "ec2:DeleteSnapshot", Resource: "*",
			Context: map[string][]string{"aws:ResourceTag/Name": {"crabbox-ab-snap"}}}, want: iameval.ImplicitDeny, blind: true},
		{name: "IfExists with the key missing", req: iameval.Request{Action: "ec2:DeregisterImage", Resource: "*"}, want: iameval.Allow},
		{name: "IfExists with another value", req: iameval.Request{Action: "ec2:DeregisterImage", Resource: "*",
			Context: map[string][]string{"aws:ResourceTag/crabbox": {"no"}}}, want: iameval.ImplicitDeny, blind: true},
		{name: "SSM parameter under the prefix", req: iameval.Request{Action: "ssm:PutParameter",
			Resource: "arn:aws:ssm:us-east-1:123456789012:parameter/crabbox/images/default"}, want: iameval.Allow, sid: "Params"},
		{name: "SSM parameter outside the prefix", req: iameval.Request{Action: "ssm:PutParameter",
			Resource: "arn:aws:ssm:us-east-1:123456789012:parameter/other/x"}, want: iameval.ImplicitDeny, blind: true},
		{name: "explicit deny wins", req: iameval.Request{Action: "ssm:DeleteParameter",
			Resource: "arn:aws:ssm:us-east-1:123456789012:parameter/crabbox/images/prod"}, want: iameval.ExplicitDeny, sid: "NoProd"},
		{name: "PassRole to EC2", req: iameval.Request{Action: "iam:PassRole", Resource: "arn:aws:iam::123456789012:role/box",
			Context: map[string][]string{"iam:PassedToService": {"ec2.amazonaws.com"}}}, want: iameval.Allow},
		{name: "PassRole to another service", req: iameval.Request{Action: "iam:PassRole", Resource: "arn:aws:iam::123456789012:role/box",
			Context: map[string][]string{"iam:PassedToService": {"lambda.amazonaws.com"}}}, want: iameval.ImplicitDeny, blind: true},
		{name: "PassRole in another account", req: iameval.Request{Action: "iam:PassRole", Resource: "arn:aws:iam::999999999999:role/box",
			Context: map[string][]string{"iam:PassedToService": {"ec2.amazonaws.com"}}}, want: iameval.ImplicitDeny, blind: true},
	}
	blindPolicy := blind(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := p.Evaluate(c.req)
			if got.Decision != c.want || (c.sid != "" && got.Sid != c.sid) {
				t.Errorf("Evaluate = %v (%s), want %v (%s)", got.Decision, got.Sid, c.want, c.sid)
			}
			// The cases marked blind are those a condition-blind engine
			// allows: proof they test what it gets wrong.
			b := blindPolicy.Evaluate(iameval.Request{Action: c.req.Action, Resource: "*"}).Decision == iameval.Allow
			if c.blind && !b {
				t.Errorf("a condition-blind engine denies this too: the case proves nothing")
			}
		})
	}
}

// blind is doc with every condition and resource dropped, as moto's IAM
// engine evaluates it.
func blind(t *testing.T) *iameval.Policy {
	t.Helper()
	p, err := iameval.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	var allow []iameval.Statement
	for _, s := range p.Statement {
		if s.Effect == "Allow" {
			s.Condition, s.Resource = nil, []string{"*"}
			allow = append(allow, s)
		}
	}
	p.Statement = allow
	return p
}

func TestForAllValuesOnMissingKeyIsVacuouslyTrue(t *testing.T) {
	p, err := iameval.Parse([]byte(`{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"ec2:RunInstances","Resource":"*",
		"Condition":{"ForAllValues:StringEquals":{"aws:TagKeys":["crabbox"]}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Evaluate(iameval.Request{Action: "ec2:RunInstances", Resource: "*"}).Decision; d != iameval.Allow {
		t.Errorf("ForAllValues on a request without tags = %v, want allow (IAM's documented behaviour)", d)
	}
}

func TestAllowsNeedsEveryResource(t *testing.T) {
	p, err := iameval.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	ok := iameval.Request{Action: "ec2:TerminateInstances", Resource: "arn:aws:ec2:us-east-1:1:instance/i-1",
		Context: map[string][]string{"aws:ResourceTag/crabbox": {"true"}}}
	foreign := iameval.Request{Action: "ec2:TerminateInstances", Resource: "arn:aws:ec2:us-east-1:1:instance/i-2"}
	if !p.Allows(ok) || p.Allows(ok, foreign) || p.Allows() {
		t.Errorf("Allows: one owned %v, owned and foreign %v, none %v", p.Allows(ok), p.Allows(ok, foreign), p.Allows())
	}
}

func TestParseRefusesWhatIsNotModelled(t *testing.T) {
	for _, d := range []string{
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","NotResource":"x","Resource":"*"}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateGreaterThan":{"aws:CurrentTime":"2020-01-01"}}}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"ForAllValues:Bool":{"k":"true"}}}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Maybe","Action":"*","Resource":"*"}]}`,
		`{"Version":"2008-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Resource":"*"}]}`,
	} {
		if _, err := iameval.Parse([]byte(d)); err == nil {
			t.Errorf("Parse(%s) accepted it", d)
		}
	}
}

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		p, v string
		want bool
	}{
		{"*", "", true}, {"a*", "abc", true}, {"*c", "abc", true}, {"a*c", "ac", true}, {"a?c", "abc", true},
		{"a?c", "ac", false}, {"a*b*c", "axxbyyc", true}, {"a*b*c", "axxbyy", false}, {"abc", "abd", false},
		{"arn:aws:ssm:*:*:parameter/crabbox/*", "arn:aws:ssm:us-east-1:1:parameter/crabbox/images/x", true},
	} {
		if got := iameval.Glob(c.p, c.v); got != c.want {
			t.Errorf("Glob(%q, %q) = %v", c.p, c.v, got)
		}
	}
}
