package main

import (
	"bytes"
	"strings"
	"testing"
)

const stream = `{"Action":"run","Package":"p/a","Test":"TestOK"}
{"Action":"output","Package":"p/a","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"pass","Package":"p/a","Test":"TestOK","Elapsed":1.5}
{"Action":"run","Package":"p/a","Test":"TestSkip"}
{"Action":"output","Package":"p/a","Test":"TestSkip","Output":"    a_test.go:9: needs Xvfb\n"}
{"Action":"output","Package":"p/a","Test":"TestSkip","Output":"--- SKIP: TestSkip (0.00s)\n"}
{"Action":"skip","Package":"p/a","Test":"TestSkip"}
{"Action":"pass","Package":"p/a","Elapsed":2}
{"Action":"run","Package":"p/b","Test":"TestBad"}
{"Action":"output","Package":"p/b","Test":"TestBad","Output":"    b_test.go:3: boom happened\n"}
{"Action":"fail","Package":"p/b","Test":"TestBad","Elapsed":0.2}
{"Action":"fail","Package":"p/b","Elapsed":0.3}
# p/c
c.go:1: syntax error
{"Action":"output","Package":"p/c","Output":"FAIL\tp/c [build failed]\n"}
{"Action":"fail","Package":"p/c","Elapsed":0}
`

func TestSummary(t *testing.T) {
	s := newSummary()
	var out bytes.Buffer
	if err := s.read(strings.NewReader(stream), &out); err != nil {
		t.Fatal(err)
	}
	ok := s.print(&out)
	got := out.String()
	if ok {
		t.Fatalf("a failed stream summarized as a pass:\n%s", got)
	}
	for _, want := range []string{
		"ok    p/a 2.0s (1 tests passed, 1 skipped)",
		"FAIL  p/b", "boom happened",
		"c.go:1: syntax error", "FAIL  p/c", "[build failed]",
		"3 packages (2 failed); 1 tests passed (0 subtests), 1 failed, 1 skipped",
		"p/a TestSkip: a_test.go:9: needs Xvfb",
		"===== FAIL",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
}

func TestSummaryOfNothingFails(t *testing.T) {
	s := newSummary()
	var out bytes.Buffer
	if err := s.read(strings.NewReader(""), &out); err != nil {
		t.Fatal(err)
	}
	if s.print(&out) {
		t.Fatal("an empty stream summarized as a pass")
	}
}
