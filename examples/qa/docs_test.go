package main

import (
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// flagToken finds "-name" words (not "--switches"); names of three or more
// characters are taken for harness flags (shorter ones are the options of
// shell tools in the scripts the harness runs: -d, -rf, -gt, ...).
var flagToken = regexp.MustCompile("(?:^|[\\s\"'(`])-([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")

func checkFlagMentions(t *testing.T, where, text string) {
	t.Helper()
	for _, m := range flagToken.FindAllStringSubmatch(text, -1) {
		if name := m[1]; len(name) >= 3 && flag.Lookup(name) == nil {
			t.Errorf("%s mentions -%s, which is not a flag of the harness", where, name)
		}
	}
}

// TestDocumentedFlagsExist: every flag the harness's comments, messages,
// flag help and the docs' command lines mention is a real flag.
func TestDocumentedFlagsExist(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		for _, cg := range f.Comments {
			checkFlagMentions(t, fset.Position(cg.Pos()).String()+" (comment)", cg.Text())
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil && !strings.Contains(s, "\n") {
					// One-line strings: messages and help (scripts span lines).
					checkFlagMentions(t, fset.Position(lit.Pos()).String(), s)
				}
			}
			return true
		})
	}
	flag.VisitAll(func(f *flag.Flag) { checkFlagMentions(t, "help of -"+f.Name, f.Usage) })
	for _, doc := range []string{"../../README.md", "../../docs/desktop.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if _, cmd, ok := strings.Cut(line, "go run ./examples/qa"); ok {
				checkFlagMentions(t, doc+":"+strconv.Itoa(i+1), cmd)
			}
		}
	}
}
