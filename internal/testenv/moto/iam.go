// IAMTransport: an HTTP front for moto that authorizes each EC2 and SSM request against one IAM policy, as AWS would, with resource and request tags.

package moto

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/crabbox/crabbox-go/internal/testenv/iameval"
)

// Account is the account moto puts resources in; IAMTransport uses it in
// the ARNs it authorizes.
const Account = "123456789012"

// IAMPrincipal is the principal IAMTransport names in its refusals.
const IAMPrincipal = "arn:aws:sts::" + Account + ":assumed-role/crabbox-least-privilege/test"

// IAMTransport is an http.RoundTripper in front of moto that runs the
// client it is installed in as a principal holding exactly one IAM policy.
// moto's own IAM engine checks every request against resource "*" and
// ignores conditions; this front evaluates the policy with
// internal/testenv/iameval, per resource the request acts on, with that
// resource's tags. A refused request never reaches moto and gets AWS's
// error: UnauthorizedOperation (HTTP 403, with an encoded authorization
// message) for EC2, AccessDeniedException (HTTP 400, JSON) for SSM. It is
// safe for concurrent use.
//
// How a request is authorized (modelled on the EC2 and SSM pages of the
// Service Authorization Reference,
// https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html
// and .../list_awssystemsmanager.html, and on "Grant permission to tag
// Amazon EC2 resources during creation",
// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/supported-iam-actions-tagging.html):
//
//   - Describe* calls: resource "*" (EC2 describe calls have no
//     resource-level permissions).
//   - RunInstances: the new instance, volume and network interface, and
//     the image, security groups, subnet (or "subnet/*" when the request
//     names none) and key pair it names, each with its tags.
//     CreateImage: the new image and snapshot and the source instance.
//     CopyImage: the new image and the source image (looked up in its
//     region). CreateSecurityGroup: the new group and the VPC.
//     ImportKeyPair: the new key pair.
//   - Tag-on-create: for each TagSpecification, ec2:CreateTags on the new
//     resource with ec2:CreateAction set to the creating action; each new
//     resource of a tagged type is evaluated with aws:RequestTag/<key> and
//     aws:TagKeys of its specification.
//   - CreateTags and DeleteTags: each ResourceId with its tags, and the
//     request's tags as aws:RequestTag/<key> and aws:TagKeys.
//   - Calls on existing resources (TerminateInstances, DeleteKeyPair,
//     DeleteSnapshot, DeregisterImage, image protection and deprecation,
//     AuthorizeSecurityGroupIngress): each named resource with its tags. A
//     resource that does not exist (a key pair already deleted) is
//     evaluated without tags, so any aws:ResourceTag condition fails: EC2
//     answers such a call UnauthorizedOperation, not NotFound.
//   - DescribeImageReferences: also every action it needs for each
//     resource type it checks (IncludeAllResourceTypes: all of them), from
//     "Identify your resources referencing specified AMIs",
//     https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-ami-references.html:
//     ec2:Instance needs ec2:DescribeInstances; ec2:LaunchTemplate
//     ec2:DescribeLaunchTemplates and ec2:DescribeLaunchTemplateVersions;
//     ssm:Parameter ssm:DescribeParameters; imagebuilder:ImageRecipe
//     imagebuilder:ListImageRecipes; imagebuilder:ContainerRecipe
//     imagebuilder:ListContainerRecipes. A missing one is modelled as
//     UnauthorizedOperation of the whole call.
//   - SSM: the parameter ARN of Name (Names for GetParameters), a
//     ":version" or ":label" selector dropped; DescribeParameters on "*".
//
// Not modelled: iam:PassRole (a request with IamInstanceProfile is
// refused as not modelled), aws:RequestedRegion and other global keys,
// ec2:ResourceTag aliases, launch templates, KMS keys, resource-based and
// session policies. An EC2 or SSM action this front does not know is
// refused as not modelled, so a new driver call fails the test until it is
// modelled here.
type IAMTransport struct {
	// Base reaches moto; default http.DefaultTransport.
	Base http.RoundTripper

	policy   *iameval.Policy
	endpoint string

	mu         sync.Mutex
	refusals   []Refusal
	authorized map[string]int
}

// Refusal is one request IAMTransport refused.
type Refusal struct {
	Action   string // "ec2:DeleteKeyPair"
	Resource string // the ARN that was not allowed
	Decision string // "implicit deny", "explicit deny", "not modelled"
	Context  map[string][]string
}

func (r Refusal) String() string {
	return fmt.Sprintf("%s on %s: %s %v", r.Action, r.Resource, r.Decision, r.Context)
}

// NewIAMTransport returns a front for the moto server at endpoint whose
// principal holds policy (an IAM policy document, JSON). Resource tags are
// looked up in moto with an unrestricted client.
func NewIAMTransport(endpoint string, policy []byte, base http.RoundTripper) (*IAMTransport, error) {
	p, err := iameval.Parse(policy)
	if err != nil {
		return nil, err
	}
	return &IAMTransport{Base: base, policy: p, endpoint: endpoint, authorized: map[string]int{}}, nil
}

// Refusals returns the requests refused so far.
func (t *IAMTransport) Refusals() []Refusal {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Refusal(nil), t.refusals...)
}

// Authorized returns how many requests of action ("ec2:DeleteKeyPair")
// were evaluated and allowed.
func (t *IAMTransport) Authorized(action string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.authorized[action]
}

// RoundTrip implements http.RoundTripper.
func (t *IAMTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	action, err := ActionOf(req)
	if err != nil {
		return nil, err
	}
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		body, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	region := signedRegion(req)
	ssm := req.Header.Get("X-Amz-Target") != ""
	var reqs []iameval.Request
	if ssm {
		reqs, err = ssmRequests(region, action, body)
	} else {
		reqs, err = t.ec2Requests(req.Context(), region, action, body)
	}
	if err != nil {
		return nil, err
	}
	full := prefixOf(ssm) + action
	if len(reqs) == 0 {
		t.refuse(Refusal{Action: full, Resource: "*", Decision: "not modelled"})
		return denied(req, ssm, full, "*", "not modelled"), nil
	}
	for _, r := range reqs {
		if r.Action == "" { // a part of the request the front cannot model
			t.refuse(Refusal{Action: full, Resource: r.Resource, Decision: "not modelled"})
			return denied(req, ssm, full, r.Resource, "not modelled"), nil
		}
		if res := t.policy.Evaluate(r); res.Decision != iameval.Allow {
			t.refuse(Refusal{Action: r.Action, Resource: r.Resource, Decision: res.Decision.String(), Context: r.Context})
			return denied(req, ssm, r.Action, r.Resource, res.Decision.String()), nil
		}
	}
	t.mu.Lock()
	t.authorized[full]++
	t.mu.Unlock()
	return base.RoundTrip(req)
}

func (t *IAMTransport) refuse(r Refusal) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refusals = append(t.refusals, r)
}

func prefixOf(ssm bool) string {
	if ssm {
		return "ssm:"
	}
	return "ec2:"
}

// signedRegion is the region of the request's SigV4 credential scope
// (Credential=AKID/DATE/REGION/SERVICE/aws4_request).
func signedRegion(req *http.Request) string {
	_, cred, ok := strings.Cut(req.Header.Get("Authorization"), "Credential=")
	if ok {
		if parts := strings.Split(cred, "/"); len(parts) >= 3 {
			return parts[2]
		}
	}
	return "us-east-1"
}

// denied is AWS's answer to a refused request.
func denied(req *http.Request, ssm bool, action, resource, decision string) *http.Response {
	why := "because no identity-based policy allows the " + action + " action"
	if decision == "explicit deny" {
		why = "with an explicit deny in an identity-based policy"
	}
	msg := fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %s %s", IAMPrincipal, action, resource, why)
	var body, ctype string
	status := http.StatusBadRequest
	if ssm {
		ctype = "application/x-amz-json-1.1"
		b, _ := json.Marshal(map[string]string{"__type": "AccessDeniedException", "message": msg})
		body = string(b)
	} else {
		status = http.StatusForbidden
		ctype = "text/xml;charset=UTF-8"
		// EC2's encoded message is opaque (sts:DecodeAuthorizationMessage
		// decodes it); here it is base64 JSON of the same facts.
		enc, _ := json.Marshal(map[string]any{"allowed": false, "explicitDeny": decision == "explicit deny",
			"context": map[string]string{"principal": IAMPrincipal, "action": action, "resource": resource, "decision": decision}})
		var m bytes.Buffer
		_ = xmlEscape(&m, "You are not authorized to perform this operation. "+msg+
			". Encoded authorization failure message: "+base64.RawURLEncoding.EncodeToString(enc))
		body = `<?xml version="1.0" encoding="UTF-8"?>` +
			`<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>` + m.String() + `</Message></Error></Errors>` +
			`<RequestID>00000000-0000-0000-0000-00000000iam0</RequestID></Response>`
	}
	return &http.Response{
		Status: fmt.Sprintf("%d %s", status, http.StatusText(status)), StatusCode: status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": []string{ctype}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

func xmlEscape(w *bytes.Buffer, s string) error {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")
	_, err := w.WriteString(r.Replace(s))
	return err
}

// ssmRequests is the authorization of an SSM request.
func ssmRequests(region, action string, body []byte) ([]iameval.Request, error) {
	var in struct {
		Name  string   `json:"Name"`
		Names []string `json:"Names"`
	}
	if len(body) > 0 {
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, fmt.Errorf("moto: IAMTransport: SSM %s body: %w", action, err)
		}
	}
	arn := func(name string) string {
		if action == "GetParameter" || action == "GetParameters" {
			if i := strings.LastIndex(name, ":"); i > 0 {
				name = name[:i]
			}
		}
		return "arn:aws:ssm:" + region + ":" + Account + ":parameter/" + strings.TrimPrefix(name, "/")
	}
	a := "ssm:" + action
	switch action {
	case "DescribeParameters":
		return []iameval.Request{{Action: a, Resource: "*"}}, nil
	case "GetParameter", "PutParameter", "DeleteParameter", "GetParameterHistory", "LabelParameterVersion",
		"UnlabelParameterVersion":
		return []iameval.Request{{Action: a, Resource: arn(in.Name)}}, nil
	case "GetParameters", "DeleteParameters":
		var rs []iameval.Request
		for _, n := range in.Names {
			rs = append(rs, iameval.Request{Action: a, Resource: arn(n)})
		}
		return rs, nil
	}
	return nil, nil
}

// imageReferenceActions are the actions DescribeImageReferences needs per
// resource type it checks (see IAMTransport). The driver keeps its own list
// (awsec2.ImageReferenceActions) on purpose: this one models AWS, that one
// is what the driver believes, and the least-privilege tests compare them.
var imageReferenceActions = map[string][]string{
	"ec2:Instance":                 {"ec2:DescribeInstances"},
	"ec2:LaunchTemplate":           {"ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions"},
	"ssm:Parameter":                {"ssm:DescribeParameters"},
	"imagebuilder:ImageRecipe":     {"imagebuilder:ListImageRecipes"},
	"imagebuilder:ContainerRecipe": {"imagebuilder:ListContainerRecipes"},
}

// ec2Requests is the authorization of an EC2 query request: one Request
// per resource it acts on. A Request with no Action marks a part the front
// does not model.
func (t *IAMTransport) ec2Requests(ctx context.Context, region, action string, body []byte) ([]iameval.Request, error) {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("moto: IAMTransport: EC2 %s body: %w", action, err)
	}
	a := "ec2:" + action
	if strings.HasPrefix(action, "Describe") {
		rs := []iameval.Request{{Action: a, Resource: "*"}}
		if action == "DescribeImageReferences" {
			var kinds []string
			if strings.EqualFold(form.Get("IncludeAllResourceTypes"), "true") {
				for k := range imageReferenceActions {
					kinds = append(kinds, k)
				}
			}
			kinds = append(kinds, list(form, "ResourceType", "ResourceType")...)
			sort.Strings(kinds)
			for _, k := range kinds {
				for _, dep := range imageReferenceActions[k] {
					rs = append(rs, iameval.Request{Action: dep, Resource: "*"})
				}
			}
		}
		return rs, nil
	}
	b := &builder{t: t, ctx: ctx, region: region, action: a, specs: tagSpecs(form)}
	switch action {
	case "RunInstances":
		if form.Get("IamInstanceProfile.Name") != "" || form.Get("IamInstanceProfile.Arn") != "" {
			return []iameval.Request{{Resource: "iam:PassRole"}}, nil
		}
		b.created("instance", "volume", "network-interface")
		b.existing("image", form.Get("ImageId"))
		for _, sg := range list(form, "SecurityGroupId", "") {
			b.existing("security-group", sg)
		}
		if s := form.Get("SubnetId"); s != "" {
			b.existing("subnet", s)
		} else {
			b.add("subnet/*", nil)
		}
		if k := form.Get("KeyName"); k != "" {
			b.existing("key-pair", k)
		}
	case "CreateImage":
		b.created("image", "snapshot")
		b.existing("instance", form.Get("InstanceId"))
	case "CopyImage":
		b.created("image")
		src := &builder{t: t, ctx: ctx, region: form.Get("SourceRegion"), action: a}
		src.existing("image", form.Get("SourceImageId"))
		b.reqs = append(b.reqs, src.reqs...)
		b.err = errors.Join(b.err, src.err)
	case "CreateSecurityGroup":
		b.created("security-group")
		if v := form.Get("VpcId"); v != "" {
			b.existing("vpc", v)
		}
	case "ImportKeyPair":
		b.createdNamed("key-pair", form.Get("KeyName"))
	case "CreateTags", "DeleteTags":
		tags := map[string]string{}
		for i := 1; form.Has("Tag." + strconv.Itoa(i) + ".Key"); i++ {
			tags[form.Get("Tag."+strconv.Itoa(i)+".Key")] = form.Get("Tag." + strconv.Itoa(i) + ".Value")
		}
		b.reqTags = requestTagContext(tags)
		for _, id := range list(form, "ResourceId", "") {
			b.existing(typeOfID(id), id)
		}
	case "TerminateInstances":
		for _, id := range list(form, "InstanceId", "") {
			b.existing("instance", id)
		}
	case "DeleteKeyPair":
		if id := form.Get("KeyPairId"); id != "" {
			b.existing("key-pair", id)
		} else {
			b.existing("key-pair", form.Get("KeyName"))
		}
	case "DeleteSnapshot":
		b.existing("snapshot", form.Get("SnapshotId"))
	case "DeregisterImage", "EnableImageDeprecation", "DisableImageDeprecation",
		"EnableImageDeregistrationProtection", "DisableImageDeregistrationProtection":
		b.existing("image", form.Get("ImageId"))
	case "AuthorizeSecurityGroupIngress", "RevokeSecurityGroupIngress":
		if g := form.Get("GroupId"); g != "" {
			b.existing("security-group", g)
		} else {
			b.reqs = append(b.reqs, iameval.Request{Resource: "security-group named " + form.Get("GroupName")})
		}
	default:
		return nil, nil
	}
	return b.reqs, b.err
}

// builder collects the Requests of one EC2 call.
type builder struct {
	t       *IAMTransport
	ctx     context.Context
	region  string
	action  string
	specs   map[string]map[string]string // resource type -> tags on create
	reqTags map[string][]string          // request tags of CreateTags/DeleteTags
	reqs    []iameval.Request
	err     error
}

func (b *builder) add(res string, ctx map[string][]string) {
	acct := Account
	if strings.HasPrefix(res, "image/") || strings.HasPrefix(res, "snapshot/") {
		acct = "" // AMI and snapshot ARNs carry no account
	}
	b.reqs = append(b.reqs, iameval.Request{Action: b.action, Resource: "arn:aws:ec2:" + b.region + ":" + acct + ":" + res, Context: ctx})
}

// created adds the new resources of types, with their tag-on-create
// authorizations.
func (b *builder) created(types ...string) {
	for _, ty := range types {
		b.createdNamed(ty, "*")
	}
}

func (b *builder) createdNamed(ty, name string) {
	tags, tagged := b.specs[ty]
	var ctx map[string][]string
	if tagged {
		ctx = requestTagContext(tags)
	}
	b.add(ty+"/"+name, ctx)
	if tagged {
		cctx := requestTagContext(tags)
		cctx["ec2:CreateAction"] = []string{strings.TrimPrefix(b.action, "ec2:")}
		saved := b.action
		b.action = "ec2:CreateTags"
		b.add(ty+"/"+name, cctx)
		b.action = saved
	}
}

// existing adds the named resource of type ty with its tags (none if it
// does not exist) and the request's tags.
func (b *builder) existing(ty, id string) {
	if id == "" {
		b.reqs = append(b.reqs, iameval.Request{Resource: ty + " without an id"})
		return
	}
	name, tags, err := b.t.lookup(b.ctx, b.region, ty, id)
	if err != nil {
		b.err = errors.Join(b.err, err)
		return
	}
	ctx := map[string][]string{}
	for k, v := range tags {
		ctx["aws:ResourceTag/"+k] = []string{v}
	}
	for k, v := range b.reqTags {
		ctx[k] = v
	}
	b.add(ty+"/"+name, ctx)
}

func requestTagContext(tags map[string]string) map[string][]string {
	ctx := map[string][]string{"aws:TagKeys": {}}
	for k, v := range tags {
		ctx["aws:RequestTag/"+k] = []string{v}
		ctx["aws:TagKeys"] = append(ctx["aws:TagKeys"], k)
	}
	sort.Strings(ctx["aws:TagKeys"])
	return ctx
}

// tagSpecs reads TagSpecification.N.ResourceType and .Tag.M.Key/Value.
func tagSpecs(form url.Values) map[string]map[string]string {
	res := map[string]map[string]string{}
	for n := 1; form.Has("TagSpecification." + strconv.Itoa(n) + ".ResourceType"); n++ {
		p := "TagSpecification." + strconv.Itoa(n) + "."
		ty := form.Get(p + "ResourceType")
		if res[ty] == nil {
			res[ty] = map[string]string{}
		}
		for m := 1; form.Has(p + "Tag." + strconv.Itoa(m) + ".Key"); m++ {
			res[ty][form.Get(p+"Tag."+strconv.Itoa(m)+".Key")] = form.Get(p + "Tag." + strconv.Itoa(m) + ".Value")
		}
	}
	return res
}

// list reads NAME.1, NAME.2, ... (with sub, NAME.N.SUB).
func list(form url.Values, name, sub string) []string {
	var res []string
	for n := 1; ; n++ {
		k := name + "." + strconv.Itoa(n)
		if sub != "" {
			k += "." + sub
		}
		if !form.Has(k) {
			return res
		}
		res = append(res, form.Get(k))
	}
}

func typeOfID(id string) string {
	for p, ty := range map[string]string{"i-": "instance", "ami-": "image", "snap-": "snapshot", "sg-": "security-group",
		"key-": "key-pair", "vol-": "volume", "subnet-": "subnet", "vpc-": "vpc", "eni-": "network-interface"} {
		if strings.HasPrefix(id, p) {
			return ty
		}
	}
	return "unknown"
}

// lookup returns the ARN name and the tags of resource id of type ty in
// region, as moto holds them now; a resource that does not exist has no
// tags (and keeps id as its name).
func (t *IAMTransport) lookup(ctx context.Context, region, ty, id string) (string, map[string]string, error) {
	c := ec2.NewFromConfig(aws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDIAMLOOKUP", "secret", ""),
		HTTPClient:  &http.Client{Transport: http.DefaultTransport}, // not through Base: lookups are not the principal's calls
		Retryer:     func() aws.Retryer { return aws.NopRetryer{} },
	}, func(o *ec2.Options) { o.BaseEndpoint = aws.String(t.endpoint) })
	ctx = context.WithoutCancel(ctx)
	var tags []types.Tag
	found := false
	var err error
	switch ty {
	case "instance":
		var out *ec2.DescribeInstancesOutput
		if out, err = c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}); err == nil {
			for _, r := range out.Reservations {
				for _, in := range r.Instances {
					found, tags = true, in.Tags
				}
			}
		}
	case "image":
		var out *ec2.DescribeImagesOutput
		if out, err = c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}}); err == nil && len(out.Images) > 0 {
			found, tags = true, out.Images[0].Tags
		}
	case "snapshot":
		var out *ec2.DescribeSnapshotsOutput
		if out, err = c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}}); err == nil && len(out.Snapshots) > 0 {
			found, tags = true, out.Snapshots[0].Tags
		}
	case "security-group":
		var out *ec2.DescribeSecurityGroupsOutput
		if out, err = c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{id}}); err == nil && len(out.SecurityGroups) > 0 {
			found, tags = true, out.SecurityGroups[0].Tags
		}
	case "key-pair":
		in := &ec2.DescribeKeyPairsInput{KeyNames: []string{id}}
		if strings.HasPrefix(id, "key-") {
			in = &ec2.DescribeKeyPairsInput{KeyPairIds: []string{id}}
		}
		var out *ec2.DescribeKeyPairsOutput
		if out, err = c.DescribeKeyPairs(ctx, in); err == nil && len(out.KeyPairs) > 0 {
			// A key pair's ARN names it by its name.
			found, tags, id = true, out.KeyPairs[0].Tags, aws.ToString(out.KeyPairs[0].KeyName)
		}
	case "subnet":
		var out *ec2.DescribeSubnetsOutput
		if out, err = c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{id}}); err == nil && len(out.Subnets) > 0 {
			found, tags = true, out.Subnets[0].Tags
		}
	case "vpc":
		var out *ec2.DescribeVpcsOutput
		if out, err = c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{id}}); err == nil && len(out.Vpcs) > 0 {
			found, tags = true, out.Vpcs[0].Tags
		}
	default:
		return id, nil, nil // evaluated without tags
	}
	var ae smithy.APIError
	if errors.As(err, &ae) && strings.Contains(ae.ErrorCode(), "NotFound") {
		err = nil
	}
	if err != nil {
		return "", nil, fmt.Errorf("moto: IAMTransport: looking up %s %s: %w", ty, id, err)
	}
	if !found {
		return id, nil, nil
	}
	m := map[string]string{}
	for _, tg := range tags {
		m[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	return id, m, nil
}
