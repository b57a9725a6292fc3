// Package examples_test checks what the README promises about every
// program under examples/: they use only the module's public API.
package examples_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/crabbox/crabbox-go"

// TestExamplesImportNoInternalPackage fails if any Go file under examples/,
// tests included, imports an internal package of the module: what an
// example needs from the test tooling is a public kit (crabboxtest/...).
func TestExamplesImportNoInternalPackage(t *testing.T) {
	files := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		files++
		for _, imp := range f.Imports {
			p, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				return err
			}
			if strings.HasPrefix(p, module) && (strings.HasSuffix(p, "/internal") || strings.Contains(p, "/internal/")) {
				t.Errorf("examples/%s imports %s: examples use only the public API", filepath.ToSlash(path), p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 10 {
		t.Fatalf("found only %d Go files under examples/", files)
	}
}
