// Package iameval evaluates IAM identity-based policies the way AWS does,
// for the subset of the policy language the crabbox driver policies use,
// so tests can run a principal that holds exactly one policy.
//
// What is modelled, following the IAM User Guide:
//
//   - Policy evaluation logic
//     (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html):
//     a request is denied by default (implicit deny); a matching Allow
//     statement allows it; a matching Deny statement overrides every Allow
//     (explicit deny). Only identity-based policies of one principal are
//     modelled: no SCPs, permission boundaries, session or resource-based
//     policies.
//   - Action and Resource matching
//     (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_action.html,
//     .../reference_policies_elements_resource.html): a string or a list;
//     "*" and "?" wildcards; actions compare case-insensitively, resources
//     case-sensitively. NotAction is supported; NotResource and Principal
//     are refused by Parse.
//   - The Condition element
//     (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
//     and .../reference_policies_condition-single-vs-multi-valued-context-keys.html):
//     operators in a block are ANDed, keys under one operator are ANDed,
//     values of one key are ORed. StringEquals, StringNotEquals, StringLike,
//     StringNotLike, Bool and Null, each with an IfExists form (a missing key
//     then matches, except for Null); the set operators ForAllValues: (true
//     when the key is missing or empty, the documented pitfall) and
//     ForAnyValue: (false when missing) over StringEquals and StringLike. A
//     single-valued operator on a missing key does not match (StringNot...
//     included). Condition key names compare case-insensitively, values
//     case-sensitively. Policy variables (${aws:username}) are not
//     expanded.
//
// The request context (aws:ResourceTag/<key>, aws:RequestTag/<key>,
// aws:TagKeys, ec2:CreateAction, iam:PassedToService, ...) is the caller's:
// see the enforcing transport in internal/testenv/moto (iam.go) for how an
// EC2 or SSM request becomes one Request per resource it acts on.
package iameval

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Decision is the outcome of evaluating a request.
type Decision int

const (
	// ImplicitDeny: no statement allows the request.
	ImplicitDeny Decision = iota
	// Allow: a statement allows it and none denies it.
	Allow
	// ExplicitDeny: a Deny statement matches it.
	ExplicitDeny
)

func (d Decision) String() string {
	switch d {
	case Allow:
		return "allow"
	case ExplicitDeny:
		return "explicit deny"
	default:
		return "implicit deny"
	}
}

// Request is one authorization: an action on one resource ARN ("*" for an
// action without resource-level permissions) with its context keys. A key
// absent from Context is missing from the request (a resource without that
// tag, a request without tags); a present key with no values is an empty
// multivalued key.
type Request struct {
	Action   string // "ec2:DeleteKeyPair"
	Resource string // "arn:aws:ec2:us-east-1:123456789012:key-pair/crabbox-x"
	Context  map[string][]string
}

// Result is a decision and the statement that made it ("" for an implicit
// deny).
type Result struct {
	Decision Decision
	Sid      string
}

// Policy is a parsed policy document.
type Policy struct {
	Version   string
	Statement []Statement
}

// Statement is one parsed statement.
type Statement struct {
	Sid       string
	Effect    string // "Allow" or "Deny"
	Action    []string
	NotAction []string
	Resource  []string
	Condition []Condition
}

// Condition is one operator on one key with its values.
type Condition struct {
	Operator string // as written: "ForAllValues:StringEquals"
	Key      string
	Values   []string

	set      string // "", "forallvalues", "foranyvalue"
	base     string // "stringequals", ...
	ifExists bool
}

// strList is a policy string-or-list value.
type strList []string

func (s *strList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	var many []any
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("iameval: want a string or a list: %s", b)
	}
	for _, v := range many {
		switch v := v.(type) {
		case string:
			*s = append(*s, v)
		case bool:
			*s = append(*s, fmt.Sprint(v))
		default:
			return fmt.Errorf("iameval: unsupported value %v", v)
		}
	}
	return nil
}

type rawStatement struct {
	Sid         string                        `json:"Sid"`
	Effect      string                        `json:"Effect"`
	Action      strList                       `json:"Action"`
	NotAction   strList                       `json:"NotAction"`
	Resource    strList                       `json:"Resource"`
	NotResource strList                       `json:"NotResource"`
	Principal   json.RawMessage               `json:"Principal"`
	Condition   map[string]map[string]strList `json:"Condition"`
}

type rawPolicy struct {
	Version   string          `json:"Version"`
	Statement json.RawMessage `json:"Statement"`
}

var baseOperators = map[string]bool{
	"stringequals": true, "stringnotequals": true, "stringlike": true, "stringnotlike": true,
	"bool": true, "null": true,
}

// Parse parses a policy document (JSON), refusing what the evaluator does
// not model.
func Parse(doc []byte) (*Policy, error) {
	var rp rawPolicy
	if err := json.Unmarshal(doc, &rp); err != nil {
		return nil, fmt.Errorf("iameval: %w", err)
	}
	if rp.Version != "2012-10-17" {
		return nil, fmt.Errorf("iameval: policy version %q, want 2012-10-17 (policy variables and condition operators depend on it)", rp.Version)
	}
	var raws []rawStatement
	if err := json.Unmarshal(rp.Statement, &raws); err != nil {
		var one rawStatement
		if err1 := json.Unmarshal(rp.Statement, &one); err1 != nil {
			return nil, fmt.Errorf("iameval: Statement: %w", err)
		}
		raws = []rawStatement{one}
	}
	p := &Policy{Version: rp.Version}
	for i, r := range raws {
		if r.Effect != "Allow" && r.Effect != "Deny" {
			return nil, fmt.Errorf("iameval: statement %d: Effect %q", i, r.Effect)
		}
		if len(r.NotResource) > 0 || len(r.Principal) > 0 {
			return nil, fmt.Errorf("iameval: statement %d: NotResource and Principal are not modelled", i)
		}
		if (len(r.Action) == 0) == (len(r.NotAction) == 0) {
			return nil, fmt.Errorf("iameval: statement %d: exactly one of Action and NotAction", i)
		}
		if len(r.Resource) == 0 {
			return nil, fmt.Errorf("iameval: statement %d: no Resource", i)
		}
		st := Statement{Sid: r.Sid, Effect: r.Effect, Action: r.Action, NotAction: r.NotAction, Resource: r.Resource}
		for op, keys := range r.Condition {
			c, err := parseOperator(op)
			if err != nil {
				return nil, fmt.Errorf("iameval: statement %d: %w", i, err)
			}
			for k, vals := range keys {
				c := c
				c.Key, c.Values = k, vals
				st.Condition = append(st.Condition, c)
			}
		}
		p.Statement = append(p.Statement, st)
	}
	return p, nil
}

func parseOperator(op string) (Condition, error) {
	c := Condition{Operator: op}
	rest := strings.ToLower(op)
	if s, r, ok := strings.Cut(rest, ":"); ok {
		if s != "forallvalues" && s != "foranyvalue" {
			return c, fmt.Errorf("condition operator %q: unknown set operator", op)
		}
		c.set, rest = s, r
	}
	if r, ok := strings.CutSuffix(rest, "ifexists"); ok {
		c.ifExists, rest = true, r
	}
	if !baseOperators[rest] || (c.set != "" && rest != "stringequals" && rest != "stringlike") ||
		(rest == "null" && (c.ifExists || c.set != "")) {
		return c, fmt.Errorf("condition operator %q is not modelled", op)
	}
	c.base = rest
	return c, nil
}

// Evaluate decides r: explicit deny wins over allow, and without an allow
// the request is implicitly denied.
func (p *Policy) Evaluate(r Request) Result {
	res := Result{Decision: ImplicitDeny}
	for _, s := range p.Statement {
		if !s.applies(r) {
			continue
		}
		if s.Effect == "Deny" {
			return Result{Decision: ExplicitDeny, Sid: s.Sid}
		}
		if res.Decision == ImplicitDeny {
			res = Result{Decision: Allow, Sid: s.Sid}
		}
	}
	return res
}

// Allows reports whether p allows every request of rs (an API call that
// authorizes against several resources needs all of them).
func (p *Policy) Allows(rs ...Request) bool {
	for _, r := range rs {
		if p.Evaluate(r).Decision != Allow {
			return false
		}
	}
	return len(rs) > 0
}

func (s *Statement) applies(r Request) bool {
	if len(s.Action) > 0 && !anyMatch(s.Action, r.Action, true) {
		return false
	}
	if len(s.NotAction) > 0 && anyMatch(s.NotAction, r.Action, true) {
		return false
	}
	if !anyMatch(s.Resource, r.Resource, false) {
		return false
	}
	for _, c := range s.Condition {
		if !c.holds(r.Context) {
			return false
		}
	}
	return true
}

func anyMatch(patterns []string, v string, fold bool) bool {
	for _, p := range patterns {
		if fold {
			if Glob(strings.ToLower(p), strings.ToLower(v)) {
				return true
			}
		} else if Glob(p, v) {
			return true
		}
	}
	return false
}

// lookup finds key in ctx, case-insensitively.
func lookup(ctx map[string][]string, key string) ([]string, bool) {
	if v, ok := ctx[key]; ok {
		return v, true
	}
	for k, v := range ctx {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return nil, false
}

func (c *Condition) holds(ctx map[string][]string) bool {
	vals, present := lookup(ctx, c.Key)
	if c.base == "null" {
		// "true": the key must be missing; "false": present.
		want := len(c.Values) > 0 && strings.EqualFold(c.Values[0], "true")
		return want == (!present || len(vals) == 0)
	}
	switch c.set {
	case "forallvalues":
		// Every request value matches some policy value; vacuously true
		// for a missing or empty key.
		for _, v := range vals {
			if !c.matchOne(v) {
				return false
			}
		}
		return true
	case "foranyvalue":
		for _, v := range vals {
			if c.matchOne(v) {
				return true
			}
		}
		return false
	}
	if !present || len(vals) == 0 {
		return c.ifExists
	}
	// A single-valued operator: the (first) request value against the
	// policy values, ORed; the negated operators match when no policy
	// value matches.
	return c.matchOne(vals[0])
}

// matchOne reports whether one request value satisfies the operator.
func (c *Condition) matchOne(v string) bool {
	hit := false
	for _, pv := range c.Values {
		switch c.base {
		case "stringequals", "stringnotequals":
			hit = pv == v
		case "stringlike", "stringnotlike":
			hit = Glob(pv, v)
		case "bool":
			hit = strings.EqualFold(pv, v)
		}
		if hit {
			break
		}
	}
	if c.base == "stringnotequals" || c.base == "stringnotlike" {
		return !hit
	}
	return hit
}

// Glob matches v against pattern p with IAM's wildcards: "*" any run of
// characters (none included), "?" exactly one.
func Glob(p, v string) bool {
	// Iterative matcher with backtracking to the last "*".
	pi, vi, star, mark := 0, 0, -1, 0
	for vi < len(v) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == v[vi]):
			pi++
			vi++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, vi
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			vi = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
