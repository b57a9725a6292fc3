// Command testsummary reads `go test -json` on stdin and prints what a
// reader of a CI log needs: one line per package as it finishes, the full
// output of every failed test, and a closing summary (packages, tests
// passed, failed and skipped, the skipped tests with their reasons, and
// the slowest tests). It exits 1 when anything failed or nothing ran.
//
//	go test -json ./... | go run ./internal/testenv/testsummary
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

type testKey struct{ pkg, name string }

type result struct {
	action  string
	elapsed float64
	output  []string
}

type summary struct {
	tests    map[testKey]*result
	order    []testKey
	pkgOut   map[string][]string
	pkgs     []string
	pkgFail  map[string]bool
	pkgTime  map[string]float64
	nonJSON  []string
	failures int
}

func main() {
	s := newSummary()
	if err := s.read(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	if !s.print(os.Stdout) {
		os.Exit(1)
	}
}

func newSummary() *summary {
	return &summary{tests: map[testKey]*result{}, pkgOut: map[string][]string{}, pkgFail: map[string]bool{},
		pkgTime: map[string]float64{}}
}

// read consumes the event stream, printing package lines and failures as
// they come.
func (s *summary) read(r io.Reader, w io.Writer) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// Build errors and the like arrive as plain text.
			fmt.Fprintln(w, string(line))
			s.nonJSON = append(s.nonJSON, string(line))
			continue
		}
		s.add(e, w)
	}
	return sc.Err()
}

func (s *summary) add(e event, w io.Writer) {
	if e.Test == "" {
		switch e.Action {
		case "output":
			s.pkgOut[e.Package] = append(s.pkgOut[e.Package], e.Output)
		case "pass", "fail", "skip":
			s.pkgs = append(s.pkgs, e.Package)
			s.pkgTime[e.Package] = e.Elapsed
			s.printPackage(e, w)
		}
		return
	}
	k := testKey{e.Package, e.Test}
	r := s.tests[k]
	if r == nil {
		r = &result{}
		s.tests[k] = r
		s.order = append(s.order, k)
	}
	switch e.Action {
	case "output":
		r.output = append(r.output, e.Output)
	case "pass", "fail", "skip":
		r.action, r.elapsed = e.Action, e.Elapsed
	}
}

func (s *summary) printPackage(e event, w io.Writer) {
	passed, failed, skipped := 0, 0, 0
	for _, k := range s.order {
		r := s.tests[k]
		if k.pkg != e.Package || strings.Contains(k.name, "/") {
			continue
		}
		switch r.action {
		case "pass":
			passed++
		case "fail":
			failed++
		case "skip":
			skipped++
		}
	}
	if e.Action != "fail" {
		fmt.Fprintf(w, "ok    %s %.1fs (%d tests passed, %d skipped)\n", e.Package, e.Elapsed, passed, skipped)
		return
	}
	s.pkgFail[e.Package] = true
	s.failures++
	fmt.Fprintf(w, "FAIL  %s %.1fs (%d passed, %d failed, %d skipped)\n", e.Package, e.Elapsed, passed, failed, skipped)
	printed := false
	for _, k := range s.order {
		if r := s.tests[k]; k.pkg == e.Package && r.action == "fail" && !strings.Contains(k.name, "/") {
			fmt.Fprintf(w, "----- output of %s %s\n%s", k.pkg, k.name, strings.Join(r.output, ""))
			printed = true
		}
	}
	if !printed || failed == 0 {
		// A build failure, a panic or a timeout outside any test.
		fmt.Fprintf(w, "----- output of %s\n%s", e.Package, strings.Join(s.pkgOut[e.Package], ""))
	}
}

// skipReason is the last line a skipped test logged before "--- SKIP".
func skipReason(out []string) string {
	for i := len(out) - 1; i >= 0; i-- {
		l := strings.TrimSpace(out[i])
		if l == "" || strings.HasPrefix(l, "---") || strings.HasPrefix(l, "===") {
			continue
		}
		return l
	}
	return ""
}

// print writes the closing summary and reports whether everything passed.
func (s *summary) print(w io.Writer) bool {
	var passed, failed, skipped, subPassed int
	var skips, fails []string
	type timed struct {
		name string
		d    float64
	}
	var slow []timed
	for _, k := range s.order {
		r := s.tests[k]
		top := !strings.Contains(k.name, "/")
		switch r.action {
		case "pass":
			if top {
				passed++
				slow = append(slow, timed{k.pkg + " " + k.name, r.elapsed})
			} else {
				subPassed++
			}
		case "fail":
			if top {
				failed++
			}
			fails = append(fails, k.pkg+" "+k.name)
		case "skip":
			if top {
				skipped++
			}
			skips = append(skips, fmt.Sprintf("%s %s: %s", k.pkg, k.name, skipReason(r.output)))
		}
	}
	sort.Slice(slow, func(i, j int) bool { return slow[i].d > slow[j].d })
	fmt.Fprintf(w, "\n===== summary: %d packages (%d failed); %d tests passed (%d subtests), %d failed, %d skipped\n",
		len(s.pkgs), s.failures, passed, subPassed, failed, skipped)
	if len(skips) > 0 {
		fmt.Fprintf(w, "skipped tests and subtests (%d):\n", len(skips))
		for _, l := range skips {
			fmt.Fprintln(w, "  "+l)
		}
	}
	if len(slow) > 0 {
		fmt.Fprintln(w, "slowest tests:")
		for i := 0; i < len(slow) && i < 10; i++ {
			fmt.Fprintf(w, "  %6.1fs %s\n", slow[i].d, slow[i].name)
		}
	}
	if len(fails) > 0 {
		fmt.Fprintln(w, "failed:")
		for _, l := range fails {
			fmt.Fprintln(w, "  "+l)
		}
	}
	ok := s.failures == 0 && failed == 0 && len(s.pkgs) > 0 && passed > 0
	if ok {
		fmt.Fprintln(w, "===== PASS", time.Now().UTC().Format(time.RFC3339))
	} else {
		fmt.Fprintln(w, "===== FAIL")
	}
	return ok
}
