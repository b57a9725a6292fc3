package hcloudfake

import (
	"fmt"
	"regexp"
	"strings"
)

// Label rules of the Hetzner Cloud API: a key is an optional DNS-subdomain
// prefix and "/" followed by a name of at most 63 characters that begins and
// ends with [a-z0-9A-Z] and has [-_.a-z0-9A-Z] in between; a value is empty or
// follows the name rule. The "hetzner.cloud/" prefix is reserved.
var (
	labelKeyRe   = regexp.MustCompile(`^([a-z0-9A-Z]((?:[\-_.]|[a-z0-9A-Z]){0,253}[a-z0-9A-Z])?/)?[a-z0-9A-Z]((?:[\-_.]|[a-z0-9A-Z]){0,61}[a-z0-9A-Z])?$`)
	labelValueRe = regexp.MustCompile(`^(([a-z0-9A-Z](?:[\-_.]|[a-z0-9A-Z]){0,61})?[a-z0-9A-Z]$|$)`)
)

func validateLabels(labels map[string]string) *apiError {
	for k, v := range labels {
		if !labelKeyRe.MatchString(k) || strings.HasPrefix(k, "hetzner.cloud/") {
			return invalidInput("labels", fmt.Sprintf("label key '%s' is not correctly formatted", k))
		}
		if !labelValueRe.MatchString(v) {
			return invalidInput("labels", fmt.Sprintf("label value '%s' (key: %s) is not correctly formatted", v, k))
		}
	}
	return nil
}

// selector is a parsed label selector: all requirements must hold.
type selector []requirement

type requirement struct {
	key    string
	op     string // "exists", "!exists", "=", "!=", "in", "notin"
	values []string
}

// parseSelector parses the API's label selector syntax:
// "k", "!k", "k=v", "k==v", "k!=v", "k in (a,b)", "k notin (a,b)",
// requirements joined by ",".
func parseSelector(s string) (selector, *apiError) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var parts []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
			if depth < 0 {
				return nil, invalidInput("label_selector", "unbalanced parenthesis")
			}
		case ',':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	if depth != 0 {
		return nil, invalidInput("label_selector", "unbalanced parenthesis")
	}
	parts = append(parts, s[start:])
	var sel selector
	for _, p := range parts {
		req, err := parseRequirement(strings.TrimSpace(p))
		if err != nil {
			return nil, err
		}
		sel = append(sel, req)
	}
	return sel, nil
}

var setRe = regexp.MustCompile(`^(\S+)\s+(in|notin)\s*\((.*)\)$`)

func parseRequirement(p string) (requirement, *apiError) {
	bad := func() (requirement, *apiError) {
		return requirement{}, invalidInput("label_selector", fmt.Sprintf("invalid label selector expression '%s'", p))
	}
	if p == "" {
		return bad()
	}
	if m := setRe.FindStringSubmatch(p); m != nil {
		var vals []string
		for _, v := range strings.Split(m[3], ",") {
			v = strings.TrimSpace(v)
			if !labelValueRe.MatchString(v) {
				return bad()
			}
			vals = append(vals, v)
		}
		if !labelKeyRe.MatchString(m[1]) {
			return bad()
		}
		return requirement{key: m[1], op: m[2], values: vals}, nil
	}
	var key, op, val string
	switch {
	case strings.Contains(p, "!="):
		i := strings.Index(p, "!=")
		key, op, val = p[:i], "!=", p[i+2:]
	case strings.Contains(p, "=="):
		i := strings.Index(p, "==")
		key, op, val = p[:i], "=", p[i+2:]
	case strings.Contains(p, "="):
		i := strings.Index(p, "=")
		key, op, val = p[:i], "=", p[i+1:]
	case strings.HasPrefix(p, "!"):
		key, op = p[1:], "!exists"
	default:
		key, op = p, "exists"
	}
	key, val = strings.TrimSpace(key), strings.TrimSpace(val)
	if !labelKeyRe.MatchString(key) || !labelValueRe.MatchString(val) {
		return bad()
	}
	return requirement{key: key, op: op, values: []string{val}}, nil
}

func (sel selector) matches(labels map[string]string) bool {
	for _, r := range sel {
		v, ok := labels[r.key]
		switch r.op {
		case "exists":
			if !ok {
				return false
			}
		case "!exists":
			if ok {
				return false
			}
		case "=":
			if !ok || v != r.values[0] {
				return false
			}
		case "!=":
			if ok && v == r.values[0] {
				return false
			}
		case "in":
			if !ok || !contains(r.values, v) {
				return false
			}
		case "notin":
			if ok && contains(r.values, v) {
				return false
			}
		}
	}
	return true
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}
